"""Fixtures for the video tests: TensorFlow quiet and on 1 thread, tiny TSM networks, a real clip."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def _tensorflow_threads():
    from greenpipe.video.env import configure_tensorflow

    configure_tensorflow(1)


def tiny_online(seed: int = 0, shift: bool = True):
    """A 32 px TSM MobileNetV2 (10 shifts, 11 kernels) with non-trivial BN statistics."""
    import keras

    from greenpipe.models.tsm_tf import TSMConfig, make_net

    keras.utils.set_random_seed(seed)
    return _randomise_bn(make_net(TSMConfig(arch="mobilenetv2", num_classes=5, input_size=32, n_frames=4,
                                            width_mult=0.25, last_channel=32, shift=shift)), seed)


def tiny_offline(seed: int = 0):
    """A 32 px TSM ResNet (one bottleneck per stage: 4 shifts, 5 kernels), 4 frames per clip."""
    import keras

    from greenpipe.models.tsm_tf import TSMConfig, make_net

    keras.utils.set_random_seed(seed)
    return _randomise_bn(make_net(TSMConfig(arch="resnet50", num_classes=5, input_size=32, n_frames=4,
                                            resnet_width=8, resnet_blocks=(1, 1, 1, 1))), seed)


def _randomise_bn(net, seed):
    """Fresh BN layers are the identity; give them statistics so a wiring error cannot hide behind them."""
    from greenpipe.models.tsm_tf import clip_model

    rng = np.random.default_rng(seed)
    for layer in clip_model(net).layers:
        if layer.__class__.__name__ == "BatchNormalization":
            g, b, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape).astype(np.float32),
                               rng.normal(0, 0.1, b.shape).astype(np.float32),
                               rng.normal(0, 0.1, mean.shape).astype(np.float32),
                               rng.uniform(0.5, 2.0, var.shape).astype(np.float32)])
    return net


def real_clip(label: str = "pan_right", n_frames: int = 4, size: int = 32, seed: int = 0) -> np.ndarray:
    """A clip of camera motion over a real built-in photograph (scikit-image's astronaut): (T, S, S, 3) uint8."""
    import cv2

    from greenpipe.data.builtin import locate, sources
    from greenpipe.data.video import synth_clip

    record = next(r for r in sources() if r["name"] == "astronaut")
    img = cv2.cvtColor(cv2.imread(str(locate(record))), cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (4 * size, 4 * size), interpolation=cv2.INTER_AREA)
    return synth_clip(img, label, n_frames, size, np.random.default_rng(seed))
