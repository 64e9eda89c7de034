"""DeiT's evaluation geometry, shared by the clean image folders and the ImageNet-C files.

torchvision is imported when a transform is built, not at import: the embedded datasets and the
CLI's listings never need it.
"""

from __future__ import annotations


def deit_resize_crop(image_size: int = 224):
    """DeiT's evaluation geometry on PIL images: resize the short side to size/0.875 (bicubic), centre crop.

    The result is still an 8-bit PIL image, so ``ToTensor`` of it gives exact multiples of 1/255.
    """
    from torchvision import transforms

    resize = int(round(image_size / 0.875))
    bicubic = transforms.InterpolationMode.BICUBIC
    return transforms.Compose([transforms.Resize(resize, interpolation=bicubic), transforms.CenterCrop(image_size)])


def deit_eval_transform(image_size: int = 224):
    """DeiT's evaluation transform: :func:`deit_resize_crop`, then a float CHW tensor in [0, 1]."""
    from torchvision import transforms

    return transforms.Compose([deit_resize_crop(image_size), transforms.ToTensor()])
