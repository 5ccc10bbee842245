"""The training input pipeline: packed data -> torch Datasets of model inputs (pixel values 0..255).

    data = PackedData("data/packed", "yuv420")           # manifests read, every file verified
    train = data.train_set(params["train"]["augment"])   # items: (inputs, teacher inputs, label)
    test = data.test_set()                               # items: (inputs, label); .batches(n)

Training items: the RGB training split (data/packed/train, shared by every input format) ->
random-resized crop to the model's size (the ImageNet protocol, ``random_resized_crop``) ->
seed 002's augmentations on the RGB image (random crop with padding, horizontal flip,
rotation, color jitter) -> conversion to the model's input format (the pack stage's
RGB->I420) -> sensor noise. RGB and YUV 4:2:0 models therefore see the same crop, and the
teacher of a distilled model sees the same augmented image in its own format. Evaluation
reads the format's packed test split as it is (resized and center-cropped at pack time):
nothing random.
"""
from pathlib import Path

import numpy as np
import torch
from torchvision import transforms
from torchvision.transforms import v2

from workflow.colorspace import rgb_to_i420, split_i420
from workflow.datasets import INPUT_NAMES, MANIFEST, JpegShards, load_packed, open_train_split, to_model_inputs
from workflow.errors import UserError
from workflow.io import read_json


class RandomResizedCrop:
    """torchvision's RandomResizedCrop for an HWC uint8 array: its crop sampling (torch's RNG, so seeded
    like every other augmentation), resized by OpenCV with area averaging when shrinking and bilinear
    when enlarging, as FFCV does (bench/loader.py: faster than torchvision's tensor resize here)."""

    def __init__(self, size, settings):
        import cv2

        cv2.setNumThreads(1)  # one image per call; the loader's workers are the parallelism
        self.cv2, self.size = cv2, size
        self.scale, self.ratio = tuple(settings["scale"]), tuple(settings["ratio"])

    def __call__(self, image):
        shape_only = torch.empty(1, 1, 1).expand(3, *image.shape[:2])  # get_params reads the size alone
        top, left, height, width = transforms.RandomResizedCrop.get_params(shape_only, self.scale, self.ratio)
        shrink = height >= self.size[0] and width >= self.size[1]
        return self.cv2.resize(image[top:top + height, left:left + width], (self.size[1], self.size[0]),
                               interpolation=self.cv2.INTER_AREA if shrink else self.cv2.INTER_LINEAR)


def build_augment(aug, height):
    """Seed 002's augmentations on a uint8 (3, H, W) tensor (the crop to H x W comes before)."""
    steps = []
    if aug["random_crop_padding"]:
        steps.append(v2.RandomCrop(height, padding=aug["random_crop_padding"], padding_mode="reflect"))
    if aug["horizontal_flip"]:
        steps.append(v2.RandomHorizontalFlip())
    if aug["rotation_degrees"]:
        steps.append(v2.RandomRotation(aug["rotation_degrees"]))
    b, c, s, h = aug["color_jitter"]
    if any((b, c, s, h)):
        steps.append(v2.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h))
    return v2.Compose(steps)


def format_inputs(image, input_format, yuv_matrix):
    """One augmented uint8 RGB image (3, H, W) as a model's inputs, uint8 planes."""
    if input_format == "rgb":
        return (image,)
    h, w = image.shape[1:]
    frame = rgb_to_i420(image.permute(1, 2, 0).numpy(), yuv_matrix)[None]
    y, uv = split_i420(frame, h, w)
    return torch.from_numpy(y[0]), torch.from_numpy(uv[0])


def decode_jpeg(data):
    """JPEG bytes -> HWC uint8 RGB: TorchCodec's decoder (torchvision.io's successor; libjpeg-turbo, no PIL
    round trip). It returns a CHW view of HWC memory, so the HWC array is free."""
    from torchcodec.decoders import decode_jpeg as decode

    return decode(torch.frombuffer(data, dtype=torch.uint8), mode="RGB").permute(1, 2, 0).numpy()


class TrainSet(torch.utils.data.Dataset):
    """Augmented training images in the model's input format, pixel values 0..255: uint8 (the training loop
    converts on the device: a quarter of the bytes through the loader's shared memory), float32 with sensor
    noise.

    Items are (inputs, teacher inputs, label); the teacher inputs (the same augmented image in
    ``teacher_format``, without noise, uint8) are empty when there is no teacher.
    """

    def __init__(self, images, labels, size, input_format, yuv_matrix, aug, teacher_format=None):
        self.images, self.labels = images, torch.from_numpy(labels)
        crop = aug.get("random_resized_crop")
        self.crop = RandomResizedCrop(size, crop) if crop else None
        self.augment, self.noise_std = build_augment(aug, size[0]), aug["gaussian_noise_std"] * 255.0
        self.input_format, self.yuv_matrix, self.teacher_format = input_format, yuv_matrix, teacher_format

    def __len__(self):
        return len(self.labels)

    def rgb(self, i):
        """Image i, HWC uint8, cropped to the model's size."""
        image = decode_jpeg(self.images.read(i)) if isinstance(self.images, JpegShards) else np.array(self.images[i])
        return self.crop(image) if self.crop else image

    def __getitem__(self, i):
        image = self.augment(torch.from_numpy(np.ascontiguousarray(self.rgb(i))).permute(2, 0, 1))
        inputs = format_inputs(image, self.input_format, self.yuv_matrix)
        if self.noise_std:
            inputs = tuple((x + torch.randn_like(x, dtype=torch.float32) * self.noise_std).clamp_(0, 255)
                           for x in inputs)
        teacher_inputs = format_inputs(image, self.teacher_format, self.yuv_matrix) if self.teacher_format else ()
        return inputs, teacher_inputs, self.labels[i]


class TestSet(torch.utils.data.Dataset):
    """A packed test split as the model's inputs, read from the memory map as needed: nothing random."""

    def __init__(self, images, labels, input_format, height, width):
        self.images, self.labels = images, torch.from_numpy(labels)
        self.input_format, self.height, self.width = input_format, height, width

    def __len__(self):
        return len(self.labels)

    def inputs(self, start, stop):
        arrays = to_model_inputs(self.images[start:stop], self.input_format, self.height, self.width)
        return tuple(torch.from_numpy(arrays[name]) for name in INPUT_NAMES[self.input_format])

    def __getitem__(self, i):
        return tuple(x[0] for x in self.inputs(i, i + 1)), self.labels[i]

    def batches(self, batch_size, start=0, stop=None):
        """(inputs, labels) of consecutive batches of images start..stop (default: all), one read each."""
        stop = len(self) if stop is None else stop
        for first in range(start, stop, batch_size):
            last = min(first + batch_size, stop)
            yield self.inputs(first, last), self.labels[first:last]


class PackedData:
    """The packed training split and one input format's test split, verified against their manifests."""

    def __init__(self, data_dir, input_format):
        data_dir = Path(data_dir)
        train_dir, format_dir = data_dir / "train", data_dir / input_format
        self.train_manifest = read_json(train_dir / MANIFEST)
        self.manifest = read_json(format_dir / MANIFEST)
        if self.train_manifest["classes"] != self.manifest["classes"]:
            raise UserError(f"{train_dir / MANIFEST}: its classes differ from {format_dir / MANIFEST}'s (packed from "
                            "different sources); rerun the pack stages")
        self.input_format, self.classes = input_format, self.manifest["classes"]
        self.height, self.width = self.manifest["height"], self.manifest["width"]
        self.yuv_matrix = self.manifest.get("yuv_matrix") or "bt601"
        self.train_images, self.train_labels = open_train_split(train_dir, self.train_manifest)
        self.test_images, self.test_labels = load_packed(format_dir / "test.npy", self.manifest, "test")
        index = [self.train_manifest["index"]] if "index" in self.train_manifest else []
        # what a run's result depends on: every training file and the test split
        self.sha256 = [f["sha256"] for f in self.train_manifest["files"] + index] + \
                      [self.manifest["splits"]["test"]["sha256"]]
        self.train_dir = train_dir

    def train_set(self, aug, teacher_format=None):
        size = (self.height, self.width)
        if aug.get("random_resized_crop") is None:
            layout = self.train_manifest["layout"]
            stored = (self.train_manifest.get("height"), self.train_manifest.get("width"))
            if layout == "jpeg" or stored != size:
                raise UserError(f"{self.train_dir / MANIFEST}: the training images are "
                                f"{'of any size' if layout == 'jpeg' else '%dx%d' % stored}, the model takes "
                                f"{size[0]}x{size[1]}: set train.augment.random_resized_crop")
        return TrainSet(self.train_images, self.train_labels, size, self.input_format, self.yuv_matrix, aug,
                        teacher_format)

    def test_set(self):
        return TestSet(self.test_images, self.test_labels, self.input_format, self.height, self.width)
