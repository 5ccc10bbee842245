"""The training input pipeline on the packed ImageNet fixture (224 px, JPEG shards) and CIFAR (raw layout)."""
import numpy as np
import pytest
import torch

from conftest import IMAGENET, tiny_params
from workflow.colorspace import rgb_to_i420, split_i420
from workflow.config import validate
from workflow.datasets import to_model_inputs
from workflow.distributed import SINGLE, World
from workflow.errors import UserError
from workflow.input_pipeline import PackedData
from workflow.pack import pack_eval, pack_train
from workflow.training import epoch_loader

CROP = {"scale": [0.08, 1.0], "ratio": [0.75, 4 / 3]}


def imagenet_params():
    params = tiny_params(data={"source": "imagefolder", "path": str(IMAGENET), "train_subset": 0, "test_subset": 0,
                               "calib_subset": 4, "image_size": 224, "pack_workers": 1})
    params["train"]["augment"].update(random_resized_crop=CROP, gaussian_noise_std=0.0)  # noise differs per format
    return validate(params)


@pytest.fixture(scope="module")
def imagenet_packed(tmp_path_factory):
    root, params = tmp_path_factory.mktemp("imagenet-packed"), imagenet_params()
    pack_train(params, root / "train")
    for fmt in ("rgb", "yuv420"):
        pack_eval(params, fmt, root / fmt)
    return root, params


def item(dataset, i, seed):
    torch.manual_seed(seed)
    return dataset[i]


def test_rgb_and_yuv_models_see_the_same_crop(imagenet_packed):
    root, params = imagenet_packed
    aug = params["train"]["augment"]
    rgb = PackedData(root, "rgb").train_set(aug)
    yuv = PackedData(root, "yuv420").train_set(aug, teacher_format="rgb")
    (image,), _, label = item(rgb, 5, seed=3)
    (y, uv), (teacher,), yuv_label = item(yuv, 5, seed=3)
    assert image.shape == (3, 224, 224) and label == yuv_label
    frame = rgb_to_i420(image.permute(1, 2, 0).numpy().astype(np.uint8), "bt601")[None]
    expected_y, expected_uv = split_i420(frame, 224, 224)
    np.testing.assert_array_equal(y.numpy(), expected_y[0])
    np.testing.assert_array_equal(uv.numpy(), expected_uv[0])
    torch.testing.assert_close(teacher, image)  # the teacher gets the same crop in its own format


def test_random_resized_crop_is_seeded(imagenet_packed):
    root, params = imagenet_packed
    train = PackedData(root, "rgb").train_set(params["train"]["augment"])
    torch.testing.assert_close(item(train, 0, 1)[0][0], item(train, 0, 1)[0][0])
    assert not torch.equal(item(train, 0, 1)[0][0], item(train, 0, 2)[0][0])


def test_loader_workers_read_the_shards_deterministically(imagenet_packed):
    """The training library's epoch loader over the JPEG shards: 2 workers, and 2 DDP ranks' shares."""
    root, params = imagenet_packed
    train = PackedData(root, "rgb").train_set(params["train"]["augment"])
    cfg = {**params["train"], "batch_size": 16, "num_workers": 2}

    def first_batch(seed, world=SINGLE):
        return next(iter(epoch_loader(train, cfg, seed, stream=0, world=world)))

    a, b = first_batch(0), first_batch(0)
    torch.testing.assert_close(a[0][0], b[0][0])
    assert torch.equal(a[2], b[2]) and a[0][0].shape == (16, 3, 224, 224) and a[0][0].dtype == torch.uint8
    ranks = [epoch_loader(train, cfg, 0, stream=0, world=World(rank, 2)).sampler for rank in (0, 1)]
    shares = [list(sampler) for sampler in ranks]
    # equal shares covering every image (DistributedSampler repeats one to even out an odd count)
    assert len(shares[0]) == len(shares[1]) == (len(train) + 1) // 2
    assert set(shares[0]) | set(shares[1]) == set(range(len(train)))
    assert first_batch(0, World(0, 2))[0][0].shape == (8, 3, 224, 224)  # each rank: its half of the batch


def test_evaluation_reads_the_packed_split_as_it_is(imagenet_packed):
    root, _ = imagenet_packed
    data = PackedData(root, "yuv420")
    test = data.test_set()
    (inputs, labels), = list(test.batches(64))
    expected = to_model_inputs(np.asarray(data.test_images), "yuv420", 224, 224)
    np.testing.assert_array_equal(inputs[0].numpy(), expected["y"])
    np.testing.assert_array_equal(inputs[1].numpy(), expected["uv"])
    torch.testing.assert_close(test[3][0][0], inputs[0][3])
    assert len(test) == 28 and labels.tolist() == data.test_labels.tolist()


def test_variable_size_training_images_need_the_crop(imagenet_packed):
    root, params = imagenet_packed
    aug = {**params["train"]["augment"], "random_resized_crop": None}
    with pytest.raises(UserError, match="training images are of any size.*set train.augment.random_resized_crop"):
        PackedData(root, "rgb").train_set(aug)


def test_image_size_needs_the_crop_and_an_even_size_for_yuv():
    params = imagenet_params()
    params["train"]["augment"]["random_resized_crop"] = None
    with pytest.raises(UserError, match="key 'train.augment.random_resized_crop': got null"):
        validate(params)
    params = imagenet_params()
    params["data"]["image_size"] = 225
    with pytest.raises(UserError, match="key 'data.image_size': got 225, expected an even size"):
        validate(params)
    params = imagenet_params()
    params["train"]["augment"]["random_resized_crop"] = {"scale": [1.0, 0.5], "ratio": [0.75, 1.33]}
    with pytest.raises(UserError, match=r"random_resized_crop.scale': got \[1.0, 0.5\]"):
        validate(params)


def test_cifar_raw_layout_keeps_seed_002_augmentations(packed_dir):
    data = PackedData(packed_dir, "rgb")
    train = data.train_set(tiny_params()["train"]["augment"])
    assert data.train_manifest["layout"] == "raw" and len(train) == 512
    (image,), teacher, label = item(train, 0, 0)
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and teacher == ()
    assert 0 <= label < 10
