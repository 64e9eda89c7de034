"""``ellrobust.evaluate``: modules defined here, side by side with a shipped model, and every bad input.

The modules are a small CNN and a small ViT of a user's own making (random weights, seeded): the ViT
exposes its tokens through the model protocol (``depth``, ``num_prefix_tokens``, ``iter_blocks``), as
README "Python: any model" says, so it gets collapse rows and the CNN does not. They are evaluated
with the shipped ``deit-elliptical`` on the embedded digits, with few images and fast attacks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import ellrobust
from ellrobust.api import default_out
from ellrobust.cli import app
from ellrobust.cli.evaluate import default_run_dir
from ellrobust.core.errors import UsageError
from ellrobust.data import load_dataset
from ellrobust.models import SHIPPED, load_model, state_dict_digest
from ellrobust.models.any_module import as_classifier
from ellrobust.models.vit import BlockOutput
from ellrobust.request.config import EvalConfig
from ellrobust.verdict.claim_types import Claim, ClaimStatus

#: Fast settings: few images, one budget, no sanity checks (their large-eps PGD is the slow part).
FAST = {"n": 16, "eps": "8/255", "sanity": False, "batch_size": 16}
ATTACKS = {"fgsm": None, "pgd": {"steps": 2}}


class SmallCNN(nn.Module):
    """Any CNN on [0, 1] images: no tokens, so no collapse rows."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.1))
        self.head = nn.Linear(8 * 16 * 16, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).flatten(1))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> BlockOutput:
        B, N, C = x.shape
        h = self.norm1(x)
        q, k, v = self.qkv(h).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, N, D)
        a = self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C))
        x = x + a
        x = x + self.mlp(self.norm2(x))
        return BlockOutput(x=x, attn_out=a, attn_in=h, q=q, k=k, v=v, m=None)


class SmallViT(nn.Module):
    """A user's own ViT that exposes its tokens: ``depth``, ``num_prefix_tokens`` and ``iter_blocks``."""

    num_prefix_tokens = 1  # the class token

    def __init__(self, dim: int = 32, depth: int = 2, heads: int = 2, patch: int = 8) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(0.02 * torch.randn(1, 1 + (32 // patch) ** 2, dim))
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 10)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def iter_blocks(self, images: torch.Tensor):
        x = self.patch(images).flatten(2).transpose(1, 2)  # (B, N, C)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1) + self.pos
        for block in self.blocks:
            out = block(x)
            x = out.x
            yield out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        *_, last = self.iter_blocks(images)
        return self.head(self.norm(last.x[:, 0]))


def _seeded(cls: type[nn.Module], **kw) -> nn.Module:
    torch.manual_seed(0)
    return cls(**kw)


@torch.no_grad()
def _correct(module: nn.Module, indices: list[int], transform=lambda x: x) -> list[int]:
    """The module's own verdict on the run's images, computed here from the dataset."""
    dataset = load_dataset("digits", None, None, None).dataset
    x = torch.stack([dataset[i][0] for i in indices])
    y = torch.stack([dataset[i][1] for i in indices])
    return (module.eval()(transform(x)).argmax(1) == y).int().tolist()


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory):
    cnn, vit = _seeded(SmallCNN), _seeded(SmallViT)
    cnn.train()  # the caller's modes, one of each: the run uses eval mode and gives them back
    vit.eval()
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    results = ellrobust.evaluate(
        {"cnn": cnn, "vit": vit, "deit-elliptical": "deit-elliptical"},
        attacks=ATTACKS, collapse=True, out=tmp_path_factory.mktemp("api") / "run", **FAST,
    )  # fmt: skip
    after = {
        "modes": (all(m.training for m in cnn.modules()), any(m.training for m in vit.modules())),
        "weights": all(torch.equal(v, before[k]) for k, v in cnn.state_dict().items()),
        "params": all(p.requires_grad and p.grad is None for p in cnn.parameters()),
    }
    return results, cnn, vit, after


def test_modules_get_rows_side_by_side_with_a_shipped_model(side_by_side):
    results, *_ = side_by_side
    df = results.table
    assert list(dict.fromkeys(df["model"])) == ["cnn", "vit", "deit-elliptical"]
    clean = df[df.metric == "clean_accuracy"].set_index("model").value
    assert set(clean.index) == {"cnn", "vit", "deit-elliptical"} and clean["deit-elliptical"] > 0.8
    robust = df[(df.metric == "robust_accuracy") & df.baseline.isna()]
    for model, m_grad in (("cnn", ""), ("vit", ""), ("deit-elliptical", "detach")):
        rows = robust[robust.model == model]
        assert sorted(rows.method) == ["fgsm", "pgd", "worst-case"] and set(rows.m_grad.fillna("")) == {m_grad}
        assert (rows.value <= clean[model] + 1e-12).all()
    collapsed = df[(df.method == "collapse") & (df.metric == "token_cosine") & df.baseline.isna()]
    assert set(collapsed.model) == {"vit", "deit-elliptical"}  # the CNN has no tokens
    assert set(collapsed[collapsed.model == "vit"].layer.dropna()) == {0, 1}
    paired = df[df.metric == "accuracy_difference"]
    pairs = {frozenset(p) for p in zip(paired.model, paired.baseline, strict=True)}
    assert pairs == {frozenset(p) for p in (("cnn", "vit"), ("cnn", "deit-elliptical"), ("vit", "deit-elliptical"))}
    assert {"clean", "fgsm", "pgd", "worst-case"} <= set(paired[paired.model.isin(["cnn", "vit"])].method)
    assert df[df.metric == "mcnemar_p_adjusted"].value.between(0, 1).all()
    assert len(pd.read_csv(results.run_dir / "results.csv")) == len(df)


def test_per_example_outcomes_are_the_modules_own(side_by_side):
    results, cnn, vit, _ = side_by_side
    ex = results.examples
    for name, module in (("cnn", cnn), ("vit", vit)):
        clean = ex[(ex.model == name) & (ex.method == "clean")].sort_values("index")
        assert len(clean) == FAST["n"]
        assert clean.correct.tolist() == _correct(module, clean["index"].tolist())
        attacked = ex[(ex.model == name) & (ex.method == "pgd")].set_index("index").correct
        assert (attacked <= clean.set_index("index").correct.loc[attacked.index]).all()  # robust only where correct


def test_verdict_and_run_json_record_the_modules(side_by_side):
    results, cnn, vit, after = side_by_side
    assert all(isinstance(c, Claim) and isinstance(c.status, ClaimStatus) for c in results.verdict)
    assert {c.models for c in results.verdict} == {("deit-elliptical", "cnn"), ("deit-elliptical", "vit")}
    names = {
        pair: {c.name for c in results.verdict if c.models == pair} for pair in {c.models for c in results.verdict}
    }
    assert "collapse" in names["deit-elliptical", "vit"]  # the ViT exposes its tokens
    assert "collapse" not in names["deit-elliptical", "cnn"]  # the CNN has none
    assert "verdict:" in results.summary() and "collapse, deit-elliptical vs vit" in results.summary()
    meta = json.loads((results.run_dir / "run.json").read_text())
    assert meta["models"] == results.models
    record = meta["models"]["cnn"]
    assert record["weights"] == "in-memory module" and not record["elliptical"] and not record["tokens"]
    assert record["config"]["library"] == "module" and record["config"]["class"].endswith(".SmallCNN")
    assert record["config"]["params"] == sum(p.numel() for p in cnn.parameters())
    assert record["checkpoint"] == state_dict_digest(as_classifier(_seeded(SmallCNN), "cnn"))  # the weights' digest
    assert set(results.table[results.table.model == "cnn"].checkpoint) == {record["checkpoint"]}
    assert meta["models"]["vit"]["tokens"] and meta["models"]["deit-elliptical"]["elliptical"]
    assert meta["config"]["models"] == ["cnn", "vit", "deit-elliptical"] and not meta["config"]["architectures"]
    # the caller's modules: their modes given back, weights and requires_grad untouched, no .grad written
    assert after == {"modes": (True, False), "weights": True, "params": True}


def test_results_summary_fits_a_notebook(side_by_side):
    results, *_ = side_by_side
    text = repr(results)
    assert text.startswith("ellrobust.Results: digits, n=16, seed=0, 3 models") and str(results.run_dir) in text
    assert "fgsm 8/255" in text and "pgd 8/255" in text and "verdict:" in text
    assert text.splitlines()[2].split()[0] == "clean"  # the accuracy table's header


def test_names_checkpoints_and_settings(tmp_path):
    plain, elliptical = (ck.path for ck in SHIPPED)
    results = ellrobust.evaluate(
        {
            "ours": "deit-elliptical",  # a registered name under a name of the caller's
            "file": elliptical,  # a bare checkpoint: ellrobust's ViT, elliptical as its metadata records
            "spec": {"model": "deit-micro", "checkpoint": str(plain)},
        },
        attacks="fgsm", eps=8 / 255, n=8, sanity=False, out=tmp_path / "run",
    )  # fmt: skip
    config = json.loads((results.run_dir / "run.json").read_text())["config"]
    assert config["models"] == ["ours", "file", "spec"]
    assert config["architectures"] == ["deit-elliptical", "vit-elliptical", "deit-micro"]
    assert config["checkpoints"] == [None, str(elliptical), str(plain)]
    assert results.models["file"]["weights"] == str(elliptical) and results.models["file"]["elliptical"]
    assert results.models["ours"]["checkpoint"] == results.models["file"]["checkpoint"]  # the same weights
    assert not results.models["spec"]["elliptical"]
    ex = results.examples[results.examples.method == "clean"]
    assert ex[ex.model == "ours"].correct.tolist() == ex[ex.model == "file"].correct.tolist()
    assert {c.models for c in results.verdict} == {("ours", "spec"), ("file", "spec")}


def test_cli_and_library_run_the_same_request(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    results = ellrobust.evaluate(
        ["deit", "deit-elliptical"], attacks="fgsm", eps=8 / 255, n=8, sanity=False, batch_size=8
    )
    assert results.run_dir.parent == tmp_path / "cache" / "ellrobust" / "runs"  # the default: not the working directory
    args = ["-m", "deit", "-m", "deit-elliptical", "--attack", "fgsm", "--eps", "8/255", "-n", "8", "--no-sanity"]
    cli = runner.invoke(app, ["eval", *args, "--batch-size", "8", "--json"])
    assert cli.exit_code == 0, cli.output
    cli_run = Path("reports") / "runs" / results.run_dir.name  # the CLI's default folder: the same name
    meta = json.loads((cli_run / "run.json").read_text())
    assert meta["config"] == json.loads((results.run_dir / "run.json").read_text())["config"]
    rows = pd.DataFrame(json.loads(cli.stdout))
    assert sorted(results.table.value.dropna().round(12)) == sorted(rows.value.dropna().round(12))
    again = ellrobust.evaluate(
        ["deit", "deit-elliptical"], attacks="fgsm", eps="8/255", n=8, sanity=False, batch_size=8
    )
    assert (again.run_dir, again.computed, again.reused) == (results.run_dir, 0, results.computed)  # resumed


def test_a_timm_vit_module_with_its_normalisation(tmp_path):
    torch.manual_seed(0)
    net = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10
    )
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    results = ellrobust.evaluate(
        {"timm-vit": {"model": net, "mean": mean, "std": std}}, collapse=True, n=8, out=tmp_path / "run"
    )
    record = results.models["timm-vit"]
    assert record["tokens"] and record["config"]["mean"] == list(mean) and record["config"]["std"] == list(std)
    df = results.table
    assert set(df[(df.method == "collapse") & (df.metric == "token_cosine")].layer.dropna()) == {0, 1}
    assert set(df.method) == {"clean", "collapse"}  # collapse alone: no attack by default
    clean = results.examples[results.examples.method == "clean"].sort_values("index")
    inside = lambda x: (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)  # noqa: E731
    assert clean.correct.tolist() == _correct(net, clean["index"].tolist(), inside)


# --- bad input: one line, naming the problem and the fix ------------------------------------------------


class Tupled(SmallCNN):
    def forward(self, images):
        return super().forward(images), None


class Declared(SmallCNN):
    input_size = 224


class ClaimsElliptical(SmallCNN):
    is_elliptical = True


def _flat(side: int, classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * side * side, classes))


SHIPPED_TOO = {"deit-elliptical": "deit-elliptical"}
BAD = [
    ("not a module", {"x": 3, **SHIPPED_TOO}, {}, "model 'x' is an int, not a model; give a registered name"),
    (
        "a class, not an instance",
        {"x": SmallCNN, **SHIPPED_TOO},
        {},
        "is the class SmallCNN, not a model; pass an instance",
    ),
    (
        "wrong number of classes",
        {"x": _flat(32, 7), **SHIPPED_TOO},
        {},
        "model 'x' returns (1, 7) for one image, not (1, 10) logits",
    ),
    (
        "wrong image size",
        {"x": _flat(64, 10), **SHIPPED_TOO},
        {},
        "model 'x' cannot take 32 px images (RuntimeError: mat1 and mat2",
    ),
    (
        "declared image size",
        {"x": Declared(), **SHIPPED_TOO},
        {},
        "model 'x' takes 224 px images but the run's images (digits) are 32 px",
    ),
    ("not a tensor", {"x": Tupled(), **SHIPPED_TOO}, {}, "returns a tuple for one image, not a tensor of logits"),
    ("elliptical without set_m_grad", {"x": ClaimsElliptical(), **SHIPPED_TOO}, {}, "has no set_m_grad(mode)"),
    ("mean without std", {"x": {"model": SmallCNN(), "mean": 0.5}, **SHIPPED_TOO}, {}, "give both mean and std"),
    ("a checkpoint for a module", {"x": {"model": SmallCNN(), "checkpoint": "a.pth"}}, {}, "brings its own weights"),
    (
        "unknown model setting",
        {"x": {"model": "deit", "steps": 3}},
        {},
        "unknown setting 'steps'; a model takes model, checkpoint",
    ),
    ("unknown model name", {"x": "deit-elliptcal"}, {}, "Did you mean 'deit-elliptical'"),
    (
        "missing checkpoint",
        {"x": "ckpt/missing.safetensors"},
        {},
        "checkpoint 'ckpt/missing.safetensors' does not exist",
    ),
    ("models not a mapping", SmallCNN(), {}, "models must map names to models"),
    ("a name twice", ["deit", "deit"], {}, "the same model is given twice"),
    (
        "unknown option",
        SHIPPED_TOO,
        {"batchsize": 8},
        "unknown option of ellrobust.evaluate 'batchsize'. Did you mean 'batch_size'",
    ),
    (
        "a per-model setting as an option",
        SHIPPED_TOO,
        {"mean": 0.5},
        "'mean' is not an option of ellrobust.evaluate: give it as a model's 'mean'",
    ),
    ("option of the wrong type", SHIPPED_TOO, {"batch_size": "8"}, "batch_size= must be a whole number (got '8')"),
    (
        "unknown attack parameter",
        SHIPPED_TOO,
        {"attacks": {"pgd": {"stepz": 3}}},
        "attack 'pgd' takes no parameter stepz; it takes steps",
    ),
    ("collapse without tokens", {"x": SmallCNN()}, {"collapse": True}, "collapse needs tokens"),
]


@pytest.mark.parametrize(("models", "kwargs", "needle"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_one_line(tmp_path, models, kwargs, needle):
    with pytest.raises(UsageError) as info:
        ellrobust.evaluate(models, n=4, out=tmp_path / "run", **kwargs)
    message = str(info.value)
    assert needle in message and "\n" not in message
    assert not (tmp_path / "run" / "results.csv").exists()


def test_a_classifier_module_is_used_as_it_is():
    model = load_model("deit-nano")
    assert as_classifier(model, "m") is model
    with pytest.raises(UsageError, match="already has the Classifier contract"):
        as_classifier(model, "m", mean=(0.5,) * 3, std=(0.5,) * 3)


@pytest.mark.parametrize(
    ("cli", "call"),
    [
        (["-m", "deit-elliptcal"], {"models": ["deit-elliptcal"]}),
        (["-m", "deit", "--attack", "pgd", "--eps", "8//255"], {"models": ["deit"], "attacks": "pgd", "eps": "8//255"}),
        (["-m", "deit", "--attack", "pgdd"], {"models": ["deit"], "attacks": ["pgdd"]}),
        (["-m", "deit", "--corruption", "fogg"], {"models": ["deit"], "corruptions": "fogg"}),
    ],
    ids=["unknown model", "malformed eps", "unknown attack", "unknown corruption"],
)
def test_the_cli_and_the_library_say_the_same_line(runner, tmp_path, cli, call):
    result = runner.invoke(app, ["eval", *cli, "-n", "4", "--out", str(tmp_path / "cli")])
    assert result.exit_code == 2
    with pytest.raises(UsageError) as info:
        ellrobust.evaluate(**call, n=4, out=tmp_path / "api")
    # the same line, each naming the value as its caller wrote it: --eps on the command line, eps= in Python
    assert result.stderr.strip() == f"error: {info.value}".replace("eps= ", "--eps ")


def test_default_out_is_the_users_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    config = EvalConfig(models=("deit",))
    assert default_out(config) == tmp_path / ".cache" / "ellrobust" / "runs" / default_run_dir(config).name
    cnn = _seeded(SmallCNN)
    other = _seeded(SmallCNN)
    with torch.no_grad():
        other.head.bias.add_(1.0)
    assert default_out(config, {"deit": cnn}) != default_out(config, {"deit": other}) != default_out(config)
    assert Path(default_out(config, {"deit": cnn})).parent == default_out(config).parent


def test_the_readmes_transformer_gets_collapse_rows(monkeypatch, tmp_path, capsys):
    """The collapse protocol's example in README "Python: any model" runs as written."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## Python: any model") : readme.index("## Datasets")]
    example = [block.split("```")[0] for block in section.split("```python\n")[1:]][-1]
    assert "iter_blocks" in example
    exec(compile(example, "README.md", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    assert "tiny-vit" in printed and "deit" in printed
