"""The report's setup section: per run folder, the command, data, models, attacks and settings it ran
with (from run.json), so a reader can tell what the numbers are of."""

from __future__ import annotations

import pandas as pd

from ellrobust.report.legend import Labels, settings_text
from ellrobust.report.number_format import format_eps
from ellrobust.report.render_markdown import bullets, escape, heading, table
from ellrobust.report.run_folder import Run
from ellrobust.report.table_model import Align, Table
from ellrobust.verdict.results_view import parse_params


def setup_lines_of_runs(runs: list[Run], labels: Labels) -> list[str]:
    out = [heading(2, "Setup")]
    for run in runs:
        out.append(heading(3, f"Run {run.label}"))
        out.append(bullets(_setup_lines(run)))
        out.append(table(_models_table(run)))
    if labels.legend:
        out.append(heading(3, "Labels"))
        out.append("Tables and figures name methods and settings by these short labels:")
        out.append(bullets([f"**{escape(label)}**: {escape(text)}" for label, text in labels.legend]))
    return out


#: What ``--labels`` makes of robust accuracy, said beside the attacks.
_LABELS_LINES = {
    "true": "**labels**: true (clean-correct images are attacked; robust: still classified correctly)",
    "predicted": "**labels**: predicted, as the research code (every image is attacked away from its clean "
    "prediction; robust: the prediction does not change, so a misclassified image can count as robust and "
    "robust accuracy can exceed clean accuracy)",
}


def _setup_lines(run: Run) -> list[str]:
    meta = run.meta
    lines = [f"**folder**: {escape(run.path)}"]
    if not meta:
        return [*lines, "**run.json**: missing; the setup below is read from the results table alone."]
    cfg, data, env = meta.get("config", {}), meta.get("dataset", {}), meta.get("environment", {})
    lines.append(
        f"**dataset**: {escape(data.get('name', '?'))} (split {escape(data.get('split', '?'))}, "
        f"{data.get('num_classes', '?')} classes, data digest {escape(data.get('digest', '?'))}); "
        f"**n** = {data.get('n', '?')} images; **seed** {cfg.get('seed', '?')}"
    )
    attacks = cfg.get("attacks") or []
    if attacks:
        names = "; ".join(a["name"] + (f" ({settings_text(a['params'])})" if a.get("params") else "") for a in attacks)
        eps = ", ".join(format_eps(e) for e in cfg.get("eps") or []) or "each attack's default"
        patches = ", ".join(f"{k:g}" for k in cfg.get("patches") or [])
        eps += f"; patches {patches}" if patches else ""
        lines.append(f"**attacks**: {escape(names)}; ε {escape(eps)}; m_grad {escape(cfg.get('m_grad', '?'))}")
        lines.append(_LABELS_LINES.get(cfg.get("labels", "true"), f"**labels**: {escape(cfg.get('labels'))}"))
    precisions = _precisions(run)
    if precisions:
        lines.append(
            f"**precision** of the attack iterations: {escape(', '.join(precisions))} "
            "(clean and final robust decisions are fp32 forwards)"
        )
    if cfg.get("corruptions"):
        severities = ", ".join(map(str, cfg.get("severities") or []))
        source = cfg.get("corruption_source") or "generated on the fly"
        protocol = protocol_lines(run)
        lines.append(
            f"**corruptions**: {escape(', '.join(cfg['corruptions']))}; severities {severities}; {escape(source)}; "
            f"protocol {escape(', '.join(protocol)) if protocol else 'not recorded'}"
        )
    if cfg.get("collapse"):
        lines.append("**collapse metrics**: per layer")
    lines.append(
        "**versions**: "
        + escape(", ".join(f"{k} {env[k]}" for k in ("ellrobust", "torch", "torchattacks", "python") if env.get(k)))
    )
    gpu = env.get("cuda") or "none"
    lines.append(
        f"**hardware**: {escape(env.get('platform', '?'))}; {env.get('cpu_count', '?')} CPUs "
        f"({env.get('torch_threads', '?')} torch threads); GPU {escape(gpu)}; device {escape(cfg.get('device', '?'))}"
    )
    wall = meta.get("wall_time_s")
    compute = meta.get("unit_seconds")
    line = f"**wall time**: {_duration(wall) if isinstance(wall, int | float) else '?'} (last invocation)"
    if isinstance(compute, int | float):
        line += f"; computing every unit took {_duration(compute)} (resumed units keep their first time)"
    lines.append(line)
    return lines


def _precisions(run: Run) -> list[str]:
    """Attack precisions: the rows' ``precision`` column, else run.json's config."""
    values = [p for p in pd.unique(run.table["precision"]) if p]
    configured = run.meta.get("config", {}).get("precision")
    return values or ([str(configured)] if configured else [])


def protocol_lines(run: Run) -> list[str]:
    """The corruption protocol (``imagenet-c``, ``cifar-10-c``): run.json's config, then the rows' params."""
    configured = run.meta.get("config", {}).get("corruption_protocol")
    found = [str(configured)] if configured else []
    rows = run.table[run.table["severity"].notna()]
    found += [str(parse_params(p)["protocol"]) for p in pd.unique(rows["params"]) if "protocol" in parse_params(p)]
    return list(dict.fromkeys(found))


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _architecture(cfg: dict) -> str:
    """One cell: ellrobust's ViT as width×depth×heads (and its variants), another library's model by its name."""
    if not cfg:
        return ""
    size = f"{cfg['img_size']} px" if cfg.get("img_size") else "any size"
    if cfg.get("library", "ellrobust") != "ellrobust":
        return f"{cfg['library']} {cfg.get('name', '?')} ({cfg.get('class', '?')}), {size}"
    variants = [v for v, on in (("distilled", cfg.get("distilled")), ("LayerScale", cfg.get("layer_scale"))) if on]
    return f"{cfg['embed_dim']}×{cfg['depth']}×{cfg['num_heads']}, patch {cfg['patch_size']}, {size}" + "".join(
        f", {v}" for v in variants
    )


def _models_table(run: Run) -> Table:
    """Models with checkpoint digests (from run.json, else from the results' checkpoint column)."""
    models = run.meta.get("models") or {}
    files = dict(
        zip(
            run.meta.get("config", {}).get("models", []),
            run.meta.get("config", {}).get("checkpoints", []),
            strict=False,
        )
    )
    if not models:
        rows = run.table[(run.table["model"] != "") & (run.table["checkpoint"] != "")].drop_duplicates("model")
        models = {r["model"]: {"checkpoint": r["checkpoint"]} for r in rows.to_dict(orient="records")}
    out = []
    for name, info in models.items():
        cfg = info.get("config") or {}
        elliptical = {True: "yes", False: "no"}.get(info.get("elliptical"), "?")
        layers = ", ".join(map(str, cfg.get("elliptical_layers") or [])) or ("none" if cfg else "")
        out.append(
            (
                name,
                info.get("checkpoint", "?"),
                info.get("weights") or files.get(name) or "?",
                elliptical,
                _architecture(cfg),
                layers,
            )
        )
    headers = ("model", "checkpoint digest", "weights", "elliptical", "architecture", "elliptical layers")
    return Table(headers, tuple(out), (Align.LEFT,) * len(headers))
