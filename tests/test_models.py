"""Model zoo: parameter counts from hand formulas, shapes, structure, BN/dropout/dtype switches."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhfc import models


def _init(model, shape=(2, 32, 32, 3), seed=0):
    return jax.jit(lambda: model.init({"params": jax.random.key(seed)}, jnp.zeros(shape, jnp.float32), train=False))()


def _np_variables(model, shape=(2, 32, 32, 3), seed=0):
    """Variables with the model's structure filled from numpy (He-scaled kernels, BN identity).

    Avoids compiling JAX random-number code (slow on CPU) in tests that only need numbers.
    """
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape, jnp.float32), train=False))

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if "kernel" in name:
            fan_in = int(np.prod(leaf.shape[:-1]))
            return jnp.asarray(rng.normal(0, np.sqrt(2.0 / fan_in), leaf.shape), jnp.float32)
        if "scale" in name or "var" in name:
            return jnp.ones(leaf.shape, jnp.float32)
        return jnp.asarray(rng.normal(0, 0.1, leaf.shape) if "bias" in name else np.zeros(leaf.shape), jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, abstract)


def _conv_kernels(params):
    """All 4-D kernels (convs), as {path: shape}."""
    return {
        jax.tree_util.keystr(p): v.shape
        for p, v in jax.tree_util.tree_leaves_with_path(params)
        if v.ndim == 4
    }


def _resnet18_param_count(num_classes, bn):
    """Hand count of the CIFAR ResNet18: 3x3 convs without bias, BN scale+bias, 1x1 projections."""
    conv = lambda k, cin, cout: k * k * cin * cout  # noqa: E731
    total = conv(3, 3, 64) + (2 * 64 if bn else 0)
    cin = 64
    for width in (64, 128, 256, 512):
        for block in range(2):
            total += conv(3, cin, width) + conv(3, width, width) + (4 * width if bn else 0)
            if cin != width:
                total += conv(1, cin, width) + (2 * width if bn else 0)
            cin = width
    return total + 512 * num_classes + num_classes


def test_resnet18_parameter_count_is_11173962():
    v = jax.eval_shape(lambda: _init(models.get_model("resnet18")))
    assert models.count_params(v["params"]) == 11_173_962 == _resnet18_param_count(10, bn=True)
    v = jax.eval_shape(lambda: _init(models.get_model("resnet18", norm="none", num_classes=100)))
    assert models.count_params(v["params"]) == _resnet18_param_count(100, bn=False)
    assert "batch_stats" not in v


def test_resnet18_partial_and_structure():
    m = models.ResNet18(num_classes=10)
    assert isinstance(m, models.ResNet) and tuple(m.stage_sizes) == (2, 2, 2, 2)
    v = jax.eval_shape(lambda: _init(m))
    kernels = _conv_kernels(v["params"])
    # 1 stem + 16 block convs + 3 projection shortcuts
    assert len(kernels) == 20
    assert v["params"][models.FIRST_CONV]["kernel"].shape == (3, 3, 3, 64)
    assert sum(1 for k, s in kernels.items() if s[:2] == (1, 1)) == 3
    # BN running stats exist for each of the 1 + 16 + 3 norm layers
    assert len(jax.tree_util.tree_leaves(v["batch_stats"])) == 2 * 20


def _paper_param_count(width=16, blocks=5, num_classes=10):
    total = 9 * 3 * width
    cin = width
    for mult in (1, 2, 4):
        c = width * mult
        for _ in range(blocks):
            total += 9 * cin * c + 9 * c * c
            cin = c
    return total + cin * num_classes + num_classes


def test_paper_resnet_structure():
    m = models.get_model("paper_resnet")
    v = jax.eval_shape(lambda: _init(m))
    assert "batch_stats" not in v  # no BatchNorm by default
    kernels = _conv_kernels(v["params"])
    # We count 31 convolutions: 1 stem (conv_init) + 3 stages x 5 blocks x 2 convs = 30;
    # with the final Dense that is the code's 32 weight layers. Option-A shortcuts have no weights.
    assert len(kernels) == 31
    assert all(s[:2] == (3, 3) for s in kernels.values())
    assert v["params"][models.FIRST_CONV]["kernel"].shape == (3, 3, 3, 16)
    assert v["params"]["head"]["kernel"].shape == (64, 10)
    assert not any("bias" in jax.tree_util.keystr(p) and "head" not in jax.tree_util.keystr(p)
                   for p, _ in jax.tree_util.tree_leaves_with_path(v["params"]))
    assert models.count_params(v["params"]) == _paper_param_count() == 461_882
    widths = sorted({s[3] for s in kernels.values()})
    assert widths == [16, 32, 64]
    vb = jax.eval_shape(lambda: _init(models.get_model("paper_resnet", norm="batch")))
    assert "batch_stats" in vb


def test_paper_resnet_glorot_uniform_init():
    # The network passes its kernel_init (Glorot-uniform by default) to every block; sample it
    # through one block (a whole-network init is slow to compile on CPU).
    m = models.get_model("paper_resnet")
    assert m.kernel_init is models.PreActBlock.kernel_init
    block = models.PreActBlock(64, 1, norm=lambda name=None: (lambda y: y), kernel_init=m.kernel_init)
    v = jax.jit(block.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 64)))
    k = np.asarray(v["params"]["conv2"]["kernel"])  # (3, 3, 64, 64)
    fan_in, fan_out = 9 * 64, 9 * 64
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    assert np.abs(k).max() <= limit
    assert np.abs(k).max() > 0.99 * limit
    np.testing.assert_allclose(k.var(), limit**2 / 3, rtol=0.05)  # variance of U(-a, a)


def test_option_a_shortcut_is_avgpool_plus_zero_channels():
    block = models.PreActBlock(32, 2, norm=lambda name=None: (lambda y: y))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 8, 8, 16)), jnp.float32)
    v = jax.eval_shape(lambda: block.init(jax.random.key(0), x))
    v = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), v)  # zero convs: output == shortcut
    out = np.asarray(block.apply(v, x))
    xn = np.asarray(x)
    pooled = xn.reshape(2, 4, 2, 4, 2, 16).mean(axis=(2, 4))
    expected = np.concatenate([np.zeros((2, 4, 4, 8)), pooled, np.zeros((2, 4, 4, 8))], axis=-1)
    assert out.shape == (2, 4, 4, 32)
    np.testing.assert_allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("name", models.MODEL_NAMES)
@pytest.mark.parametrize("norm", ["batch", "none"])
def test_output_shapes(name, norm):
    m = models.get_model(name, num_classes=7, norm=norm)
    x = jax.ShapeDtypeStruct((3, 32, 32, 3), jnp.float32)
    v = jax.eval_shape(lambda x: m.init(jax.random.key(0), x, train=False), x)
    logits = jax.eval_shape(lambda v, x: m.apply(v, x, train=False), v, x)
    assert logits.shape == (3, 7) and logits.dtype == jnp.float32
    assert v["params"][models.FIRST_CONV]["kernel"].shape[:3] == (3, 3, 3)
    if norm == "batch":
        out, upd = jax.eval_shape(lambda v, x: m.apply(v, x, train=True, mutable=["batch_stats"]), v, x)
        assert out.shape == (3, 7)
        assert jax.tree_util.tree_structure(upd["batch_stats"]) == jax.tree_util.tree_structure(v["batch_stats"])
    else:
        assert "batch_stats" not in v


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_forward_numbers_finite_and_input_dependent(name):
    m = models.get_model(name, num_classes=7, width=2)
    x = jnp.asarray(np.random.default_rng(0).random((3, 32, 32, 3)), jnp.float32)
    v = _np_variables(m)
    logits = np.asarray(jax.jit(lambda v, x: m.apply(v, x, train=False))(v, x))
    assert logits.shape == (3, 7) and np.all(np.isfinite(logits))
    assert not np.allclose(logits[0], logits[1])


def test_resnet18_stride2_padding_matches_pytorch_convention():
    # 3x3 stride-2 conv with padding (1, 1): output pixel (0, 0) sees input rows/cols -1..1.
    block = models.BasicBlock(4, 2, norm=lambda name=None: (lambda y: y))
    x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 8, 8, 3)), jnp.float32)
    rng = np.random.default_rng(3)
    shapes = jax.eval_shape(lambda: block.init(jax.random.key(0), x))
    v = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.normal(size=a.shape), jnp.float32), shapes)
    k = np.asarray(v["params"]["conv1"]["kernel"])
    y = jax.lax.conv_general_dilated(x, k, (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    _, inter = block.apply(v, x, capture_intermediates=True, mutable=["intermediates"])
    got = inter["intermediates"]["conv1"]["__call__"][0]
    np.testing.assert_allclose(np.asarray(got), np.asarray(y), atol=1e-5)
    # numpy reference of output (0, 0, 0): sum over the 2x2 valid window x[0:2, 0:2] with kernel[1:3, 1:3]
    ref = np.einsum("hwc,hwc->", np.asarray(x)[0, 0:2, 0:2, :], k[1:3, 1:3, :, 0])
    np.testing.assert_allclose(np.asarray(y)[0, 0, 0, 0], ref, rtol=1e-5, atol=1e-5)
    assert block.apply(v, x).shape == (1, 4, 4, 4)


def test_batchnorm_momentum_and_stats():
    m = models.get_model("small_cnn", width=4)
    x = jnp.asarray(np.random.default_rng(3).random((6, 32, 32, 3)), jnp.float32)
    v = _np_variables(m)
    _, upd = jax.jit(lambda v, x: m.apply(v, x, train=True, mutable=["batch_stats"]))(v, x)
    k = v["params"][models.FIRST_CONV]["kernel"]
    h = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = np.asarray(h, np.float64)
    np.testing.assert_allclose(upd["batch_stats"]["norm_init"]["mean"], 0.1 * h.mean(axis=(0, 1, 2)), atol=1e-6)
    np.testing.assert_allclose(upd["batch_stats"]["norm_init"]["var"], 0.9 + 0.1 * h.var(axis=(0, 1, 2)),
                               rtol=1e-4)


def test_normalize_inside_model():
    from jaxhfc import datasets

    m_raw = models.get_model("small_cnn", width=4, norm="none")
    m_norm = models.get_model("small_cnn", width=4, norm="none", normalize=True)
    x = jnp.asarray(np.random.default_rng(4).random((2, 32, 32, 3)), jnp.float32)
    v = _np_variables(m_raw)
    xn = (np.asarray(x) - np.asarray(datasets.CIFAR10_MEAN)) / np.asarray(datasets.CIFAR10_STD)
    np.testing.assert_allclose(m_norm.apply(v, x), m_raw.apply(v, jnp.asarray(xn, jnp.float32)), rtol=1e-5, atol=1e-5)


def test_dropout_before_head():
    m = models.get_model("small_cnn", width=4, norm="none", dropout=0.5)
    x = jnp.asarray(np.random.default_rng(5).random((4, 32, 32, 3)), jnp.float32)
    v = _np_variables(m)
    a = m.apply(v, x, train=False)
    b = jax.jit(lambda v, x: m.apply(v, x, train=False))(v, x)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Dropout sits right before the (linear) head, so its mean over masks is the eval output.
    keys = jax.random.split(jax.random.key(7), 400)
    many = np.asarray(jax.jit(jax.vmap(lambda k: m.apply(v, x, train=True, rngs={"dropout": k})))(keys))
    assert not np.allclose(many[0], many[1])
    spread = many.std(axis=0) / np.sqrt(len(keys))
    assert np.all(np.abs(many.mean(axis=0) - np.asarray(a)) < 5 * spread + 1e-6)
    with pytest.raises(Exception, match="dropout"):
        m.apply(v, x, train=True)  # no dropout rng


def test_bfloat16_compute_float32_params():
    m32 = models.get_model("small_cnn", width=8)
    m16 = models.get_model("small_cnn", width=8, dtype="bfloat16")
    x = jnp.asarray(np.random.default_rng(6).random((4, 32, 32, 3)), jnp.float32)
    v = _np_variables(m16)
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(v["params"]))
    y16 = jax.jit(lambda v, x: m16.apply(v, x, train=False))(v, x)
    y32 = jax.jit(lambda v, x: m32.apply(v, x, train=False))(v, x)
    assert y16.dtype == jnp.float32
    np.testing.assert_allclose(y16, y32, rtol=0.1, atol=0.1)
    assert not np.array_equal(np.asarray(y16), np.asarray(y32))  # really computed in bf16


def test_get_model_errors():
    with pytest.raises(ValueError, match="model name"):
        models.get_model("vgg")
    with pytest.raises(ValueError, match="norm"):
        models.get_model("resnet18", norm="layer")
    with pytest.raises(ValueError, match="dropout"):
        models.get_model("resnet18", dropout=1.0)
    with pytest.raises(ValueError, match="dtype"):
        models.get_model("resnet18", dtype="int8")
    m = models.get_model("small_cnn", width=2)
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        m.init(jax.random.key(0), jnp.zeros((32, 32, 3)))
    with pytest.raises(ValueError, match="float"):
        m.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.uint8))


def test_first_conv_name_in_every_model():
    for name in models.MODEL_NAMES:
        v = jax.eval_shape(functools.partial(_init, models.get_model(name, width=4)))
        assert models.FIRST_CONV in v["params"] and v["params"][models.FIRST_CONV]["kernel"].shape == (3, 3, 3, 4)


def test_resnet18_equals_the_pytorch_reference():
    """Our ResNet18 with the weights copied into the PyTorch reference of the benchmarks (the
    kuangliu-style CIFAR ResNet18): the same logits in eval mode (running statistics) and in
    train mode (batch statistics), and the same running-mean update. PyTorch's running
    variance takes the unbiased batch variance, flax's the biased one (a factor n / (n - 1))."""
    torch = pytest.importorskip("torch")
    from benchmarks.train_throughput import _TORCH_SRC

    ns: dict = {}
    exec(_TORCH_SRC, ns)  # noqa: S102 - the benchmark's reference model
    width = 8
    m = models.get_model("resnet18", width=width)
    rng = np.random.default_rng(5)

    def vary(path, a):  # non-trivial BatchNorm scales and running statistics
        name = jax.tree_util.keystr(path)
        if "scale" in name or "var" in name:
            return jnp.asarray(rng.uniform(0.5, 2.0, a.shape), jnp.float32)
        if "mean" in name:
            return jnp.asarray(rng.normal(0, 0.3, a.shape), jnp.float32)
        return a

    v = jax.tree_util.tree_map_with_path(vary, _np_variables(m, seed=5))
    net = ns["ResNet18"](width=width).double()

    def conv(k):
        return torch.from_numpy(np.transpose(np.asarray(k, np.float64), (3, 2, 0, 1)).copy())

    def bn(t, name, group):
        for dst, src in (("weight", "scale"), ("bias", "bias")):
            getattr(t, dst).data = torch.from_numpy(np.asarray(v["params"][group][name][src], np.float64))
        t.running_mean.data = torch.from_numpy(np.asarray(v["batch_stats"][group][name]["mean"], np.float64))
        t.running_var.data = torch.from_numpy(np.asarray(v["batch_stats"][group][name]["var"], np.float64))

    def bn_top(t, name):
        for dst, src in (("weight", "scale"), ("bias", "bias")):
            getattr(t, dst).data = torch.from_numpy(np.asarray(v["params"][name][src], np.float64))
        t.running_mean.data = torch.from_numpy(np.asarray(v["batch_stats"][name]["mean"], np.float64))
        t.running_var.data = torch.from_numpy(np.asarray(v["batch_stats"][name]["var"], np.float64))

    p = v["params"]
    net.c.weight.data = conv(p["conv_init"]["kernel"])
    bn_top(net.b, "norm_init")
    blocks = [f"stage{s}_block{b}" for s in range(1, 5) for b in (1, 2)]
    for blk, g in zip(net.layers, blocks):
        blk.c1.weight.data = conv(p[g]["conv1"]["kernel"])
        blk.c2.weight.data = conv(p[g]["conv2"]["kernel"])
        bn(blk.b1, "norm1", g)
        bn(blk.b2, "norm2", g)
        if "shortcut_conv" in p[g]:
            blk.sc[0].weight.data = conv(p[g]["shortcut_conv"]["kernel"])
            bn(blk.sc[1], "shortcut_norm", g)
        else:
            assert len(blk.sc) == 0
    net.fc.weight.data = torch.from_numpy(np.asarray(p["head"]["kernel"], np.float64).T.copy())
    net.fc.bias.data = torch.from_numpy(np.asarray(p["head"]["bias"], np.float64))
    n_torch = sum(t.numel() for t in net.parameters())
    assert n_torch == sum(a.size for a in jax.tree_util.tree_leaves(p))

    x = np.random.default_rng(6).random((4, 32, 32, 3)).astype(np.float32)
    xt = torch.from_numpy(np.transpose(x, (0, 3, 1, 2)).astype(np.float64))
    ours_eval = np.asarray(m.apply(v, jnp.asarray(x), train=False))
    ours_train, upd = m.apply(v, jnp.asarray(x), train=True, mutable=["batch_stats"])
    with torch.no_grad():
        ref_eval = net.eval()(xt).numpy()
        ref_train = net.train()(xt).numpy()
    scale = np.abs(ref_eval).max()
    np.testing.assert_allclose(ours_eval, ref_eval, atol=1e-4 * scale)
    np.testing.assert_allclose(np.asarray(ours_train), ref_train, atol=1e-4 * np.abs(ref_train).max())
    assert not np.allclose(ref_eval, ref_train, atol=1e-2 * scale)  # the two modes differ
    # running statistics after one training batch: stage-4 BatchNorm sees 4 x 4 x 4 = 64 values
    got = upd["batch_stats"]["stage4_block2"]["norm2"]
    ref = net.layers[-1].b2
    np.testing.assert_allclose(np.asarray(got["mean"]), ref.running_mean.numpy(), atol=1e-5)
    old = np.asarray(v["batch_stats"]["stage4_block2"]["norm2"]["var"], np.float64)
    unbiased = (ref.running_var.numpy() - 0.9 * old) / 0.1
    np.testing.assert_allclose(np.asarray(got["var"]), 0.9 * old + 0.1 * unbiased * 63 / 64,
                               rtol=1e-4)
