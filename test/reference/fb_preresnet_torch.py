#!/usr/bin/python3
"""fb.resnet.torch's pre-activation ResNets (models/preresnet.lua) as Lua Torch module trees: written to a real
binary .t7 file exactly as Lua Torch's torch.save lays it out, and run in PyTorch by interpreting the same
module tree with nn's semantics. Used by test/import-t7.test.ts as the independent reference of the importer.

Two versions of preresnet.lua are built:
  released  the version that trained the paper's released ResNet-200 (resnet-200.t7): every residual branch
            starts with BN-ReLU (stage 1 unit 1 too), projection shortcuts are 1x1 conv + BN on the raw unit
            input, convolutions carry biases;
  current   the file as it is today: the first unit of stages 2-4 applies BN-ReLU before the ConcatTable
            ('both_preact'), stage 1 unit 1 none ('no_preact'), projections are a bare 1x1 conv.
Both: conv 7x7/2, BN, ReLU, max pool 3x3/2, stages, nn.Copy, BN, ReLU, 7x7 average pool, nn.View, nn.Linear.

What the .t7 exercises, as real fb.resnet.torch checkpoints do: cudnn and nn class names, every learnable tensor
a view into one flattened FloatStorage (what model:getParameters() leaves behind) and gradients into another,
nn.SpatialBatchNormalization V1 (running_std = 1/sqrt(var + eps)) beside V2 (running_var, some with eps != 1e-5),
a transposed (non-contiguous) Linear weight, a DoubleTensor and a CudaTensor buffer, LongStorages, empty
tensors without storage, booleans, strings, and back-references (shared tables and storages).

The PyTorch side computes in float64 from the float32 values stored in the file. The final 7x7 average pool
is the original op where the map is 7x7 (224 input) and global average pooling otherwise, as the importer
documents.

CLI:
  fb_preresnet_torch.py --variant released --unit bottleneck --stages 2,1,1,2 --seed 1 --t7 OUT.t7 \
      [--long-size 4] [--run X.bin N,C,H,W Y.bin]...
"""

import argparse
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------------------
# Lua Torch binary serialisation (torch7 File.lua writeObject; generic/Tensor.c, generic/Storage.c write)


class LuaTable:
    """A Lua table: an ordered dict of keys (str, int, float, bool) to values."""

    def __init__(self, items=None):
        self.items = dict(items or {})


class TorchObject:
    def __init__(self, class_name, fields, version=1):
        self.class_name = class_name
        self.fields = fields  # LuaTable
        self.version = version


class Storage:
    NP = {"Byte": "u1", "Char": "i1", "Short": "<i2", "Int": "<i4", "Long": "<i8", "Float": "<f4", "Double": "<f8", "Cuda": "<f4"}

    def __init__(self, type_prefix, data):
        self.type_prefix = type_prefix
        self.data = np.ascontiguousarray(data, dtype=self.NP[type_prefix]).reshape(-1)

    @property
    def class_name(self):
        return f"torch.{self.type_prefix}Storage"


class Tensor:
    def __init__(self, type_prefix, storage, sizes, strides, offset):
        self.type_prefix = type_prefix
        self.storage = storage
        self.sizes = list(sizes)
        self.strides = list(strides)
        self.offset = offset  # 0-based

    @property
    def class_name(self):
        return f"torch.{self.type_prefix}Tensor"

    def numpy(self):
        if not self.sizes:
            return np.zeros(0)
        item = self.storage.data.itemsize
        return np.lib.stride_tricks.as_strided(
            self.storage.data[self.offset :], shape=self.sizes, strides=[s * item for s in self.strides]
        ).copy()


def empty_tensor(type_prefix="Float"):
    return Tensor(type_prefix, None, [], [], 0)


class T7Writer:
    def __init__(self, long_size=8):
        self.out = bytearray()
        self.memo = {}
        self.long_fmt = "<q" if long_size == 8 else "<i"
        self.long_size = long_size

    def int(self, v):
        self.out += struct.pack("<i", v)

    def long(self, v):
        self.out += struct.pack(self.long_fmt, v)

    def string_raw(self, s):
        b = s.encode("latin1") if isinstance(s, str) else s
        self.int(len(b))
        self.out += b

    def ref(self, obj):
        """Writes the object index; True when the object was written before (a back-reference)."""
        key = id(obj)
        if key in self.memo:
            self.int(self.memo[key])
            return True
        self.memo[key] = len(self.memo) + 1
        self.int(self.memo[key])
        return False

    def obj(self, v):
        if v is None:
            self.int(0)
        elif isinstance(v, bool):
            self.int(5)
            self.int(1 if v else 0)
        elif isinstance(v, (int, float)):
            self.int(1)
            self.out += struct.pack("<d", float(v))
        elif isinstance(v, str):
            self.int(2)
            self.string_raw(v)
        elif isinstance(v, LuaTable):
            self.int(3)
            if self.ref(v):
                return
            self.int(len(v.items))
            for k, x in v.items.items():
                self.obj(k)
                self.obj(x)
        elif isinstance(v, (TorchObject, Tensor, Storage)):
            self.int(4)
            if self.ref(v):
                return
            version = v.version if isinstance(v, TorchObject) else 1
            self.string_raw(f"V {version}")
            self.string_raw(v.class_name)
            if isinstance(v, Storage):
                self.long(v.data.size)
                data = v.data
                if v.type_prefix == "Long" and self.long_size == 4:
                    data = data.astype("<i4")
                self.out += data.tobytes()
            elif isinstance(v, Tensor):
                self.int(len(v.sizes))
                for s in v.sizes:
                    self.long(s)
                for s in v.strides:
                    self.long(s)
                self.long(v.offset + 1)
                self.obj(v.storage)
            else:
                self.obj(v.fields)
        else:
            raise TypeError(f"cannot serialise {type(v)}")


# ----------------------------------------------------------------------------------------------------------
# Parameters: every learnable tensor is a view into one flat storage, as after model:getParameters()


class FlatParams:
    def __init__(self):
        self.chunks = []
        self.size = 0
        self.params = Storage("Float", np.zeros(0))
        self.grads = Storage("Float", np.zeros(0))
        self.views = []

    def add(self, array, transposed=False):
        """Stores `array` (float32) and returns (param view, grad view) into the shared storages."""
        a = np.asarray(array, dtype=np.float32)
        offset = self.size
        if transposed:  # store a 2-d array as its transpose and view it back with swapped strides
            rows, cols = a.shape
            self.chunks.append(a.T.reshape(-1))
            sizes, strides = [rows, cols], [1, rows]
        else:
            self.chunks.append(a.reshape(-1))
            sizes = list(a.shape)
            strides = [int(np.prod(a.shape[i + 1 :])) for i in range(a.ndim)]
        self.size += a.size
        p = Tensor("Float", self.params, sizes, strides, offset)
        g = Tensor("Float", self.grads, sizes, strides, offset)
        return p, g

    def finish(self):
        self.params.data = np.concatenate(self.chunks).astype("<f4")
        self.grads.data = np.zeros(self.size, dtype="<f4")


def plain(array, type_prefix="Float"):
    a = np.ascontiguousarray(array)
    s = Storage(type_prefix, a)
    strides = [int(np.prod(a.shape[i + 1 :])) for i in range(a.ndim)]
    return Tensor(type_prefix, s, list(a.shape), strides, 0)


# ----------------------------------------------------------------------------------------------------------
# Modules: each is a Lua module (class name + fields) and knows how to run in PyTorch like nn does


class Module:
    def __init__(self, class_name, version=1, **fields):
        self.class_name = class_name
        self.version = version
        self.fields = {"train": False, "output": empty_tensor(), "gradInput": empty_tensor(), "_type": "torch.FloatTensor", **fields}

    def lua(self, cache):
        if id(self) not in cache:
            items = {}
            for k, v in self.fields.items():
                items[k] = v.lua(cache) if isinstance(v, Module) else v
            cache[id(self)] = TorchObject(self.class_name, LuaTable(items), self.version)
        return cache[id(self)]


class Container(Module):
    def __init__(self, class_name, children, **fields):
        super().__init__(class_name, **fields)
        self.children = children

    def lua(self, cache):
        if id(self) not in cache:
            obj = super().lua(cache)
            obj.fields.items["modules"] = LuaTable({i + 1: m.lua(cache) for i, m in enumerate(self.children)})
        return cache[id(self)]


class Sequential(Container):
    def __init__(self, *children):
        super().__init__("nn.Sequential", list(children))

    def forward(self, x):
        for m in self.children:
            x = m.forward(x)
        return x


class ConcatTable(Container):
    def __init__(self, *children):
        super().__init__("nn.ConcatTable", list(children), output=LuaTable(), gradInput=LuaTable())

    def forward(self, x):
        return [m.forward(x) for m in self.children]


class CAddTable(Module):
    def __init__(self):
        super().__init__("nn.CAddTable", inplace=True, gradInput=LuaTable())

    def forward(self, xs):
        y = xs[0]
        for x in xs[1:]:
            y = y + x
        return y


class Identity(Module):
    def __init__(self):
        super().__init__("nn.Identity")

    def forward(self, x):
        return x


class ReLU(Module):
    def __init__(self, cls="cudnn.ReLU"):
        super().__init__(cls, inplace=True, threshold=0, val=0)

    def forward(self, x):
        return F.relu(x)


class Conv(Module):
    def __init__(self, flat, rng, n_in, n_out, k, stride, pad, bias, cls="cudnn.SpatialConvolution", scale=1.0):
        std = scale * np.sqrt(2.0 / (k * k * n_out))
        w = (rng.standard_normal((n_out, n_in, k, k)) * std).astype(np.float32)
        pw, gw = flat.add(w)
        fields = dict(nInputPlane=n_in, nOutputPlane=n_out, kW=k, kH=k, dW=stride, dH=stride, padW=pad, padH=pad, weight=pw, gradWeight=gw)
        if cls.startswith("cudnn."):
            fields.update(groups=1, iSize=Storage("Long", np.zeros(4, dtype=np.int64)), benchmarked=True)
        self.b = None
        if bias:
            b = (rng.standard_normal(n_out) * 0.05).astype(np.float32)
            pb, gb = flat.add(b)
            fields.update(bias=pb, gradBias=gb)
            self.b = b
        super().__init__(cls, **fields)
        self.w, self.stride, self.pad = w, stride, pad

    def forward(self, x):
        b = torch.from_numpy(self.b).to(x.dtype) if self.b is not None else None
        return F.conv2d(x, torch.from_numpy(self.w).to(x.dtype), b, stride=self.stride, padding=self.pad)


class BatchNorm(Module):
    """nn.SpatialBatchNormalization; version 1 keeps running_std (the running inverse std), version 2 running_var."""

    def __init__(self, flat, rng, c, version=2, eps=1e-5, cls="nn.SpatialBatchNormalization", stats_type="Float"):
        gamma = rng.uniform(0.5, 1.5, c).astype(np.float32)
        beta = (rng.standard_normal(c) * 0.1).astype(np.float32)
        mean = (rng.standard_normal(c) * 0.1).astype(np.float32)
        var = rng.uniform(0.5, 2.0, c).astype(np.float32)
        pw, gw = flat.add(gamma)
        pb, gb = flat.add(beta)
        np_stats = np.float64 if stats_type == "Double" else np.float32
        fields = dict(eps=eps, momentum=0.1, affine=True, weight=pw, bias=pb, gradWeight=gw, gradBias=gb)
        fields["running_mean"] = plain(mean.astype(np_stats), stats_type)
        if version == 1:
            inv_std = (1.0 / np.sqrt(var.astype(np.float64) + eps)).astype(np.float32)
            fields["running_std"] = plain(inv_std.astype(np_stats), stats_type)
            fields["save_std"] = empty_tensor()
            self.inv_std = inv_std.astype(np.float64)
        else:
            fields["running_var"] = plain(var.astype(np_stats), stats_type)
            self.inv_std = 1.0 / np.sqrt(var.astype(np.float64) + eps)
        fields["save_mean"] = empty_tensor()
        super().__init__(cls, version=version, **fields)
        self.gamma, self.beta, self.mean = gamma, beta, mean

    def forward(self, x):
        t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float64)).to(x.dtype).view(1, -1, 1, 1)
        return (x - t(self.mean)) * t(self.inv_std) * t(self.gamma) + t(self.beta)


class MaxPool(Module):
    def __init__(self):
        super().__init__("nn.SpatialMaxPooling", kW=3, kH=3, dW=2, dH=2, padW=1, padH=1, ceil_mode=False, indices=empty_tensor())

    def forward(self, x):
        return F.max_pool2d(x, 3, 2, 1)


class AvgPool(Module):
    def __init__(self, k):
        super().__init__("cudnn.SpatialAveragePooling", kW=k, kH=k, dW=1, dH=1, padW=0, padH=0, ceil_mode=False, count_include_pad=True)
        self.k = k

    def forward(self, x):
        if x.shape[2] == self.k and x.shape[3] == self.k:
            return F.avg_pool2d(x, self.k, 1)  # the original op: at 224 the map is exactly 7x7
        return x.mean(dim=(2, 3), keepdim=True)  # the importer's documented replacement for other sizes


class Copy(Module):
    def __init__(self):
        super().__init__("nn.Copy", intype="torch.CudaTensor", outtype="torch.CudaTensor", dontCast=True)

    def forward(self, x):
        return x


class View(Module):
    def __init__(self, n):
        super().__init__("nn.View", size=Storage("Long", np.array([n], dtype=np.int64)), numElements=n, numInputDims=3)

    def forward(self, x):
        return x.reshape(x.shape[0], -1)


class Linear(Module):
    def __init__(self, flat, rng, n_in, n_out):
        w = (rng.uniform(-1, 1, (n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)
        b = (rng.standard_normal(n_out) * 0.1).astype(np.float32)
        pw, gw = flat.add(w, transposed=True)
        pb, gb = flat.add(b)
        super().__init__("nn.Linear", weight=pw, bias=pb, gradWeight=gw, gradBias=gb)
        self.w, self.b = w, b

    def forward(self, x):
        return F.linear(x, torch.from_numpy(self.w).to(x.dtype), torch.from_numpy(self.b).to(x.dtype))


# ----------------------------------------------------------------------------------------------------------
# preresnet.lua (ImageNet part), both versions


def build(variant, unit, stages, classes, seed):
    rng = np.random.default_rng(seed)
    flat = FlatParams()
    released = variant == "released"
    bias = released
    counter = [0]

    def sbn(c):
        # Alternate BN versions and storage types the way old and new checkpoints mix them.
        counter[0] += 1
        k = counter[0]
        version = 1 if (released and k % 2 == 1) else 2
        eps = 2e-5 if (version == 2 and k % 3 == 0) else 1e-5
        stats_type = "Double" if k % 7 == 0 else ("Cuda" if k % 5 == 0 else "Float")
        cls = "cudnn.SpatialBatchNormalization" if k % 4 == 0 else "nn.SpatialBatchNormalization"
        return BatchNorm(flat, rng, c, version=version, eps=eps, cls=cls, stats_type=stats_type)

    def conv(n_in, n_out, k, s, p, scale=1.0):
        cls = "nn.SpatialConvolution" if (counter[0] % 6 == 5) else "cudnn.SpatialConvolution"
        return Conv(flat, rng, n_in, n_out, k, s, p, bias, cls=cls, scale=scale)

    i_channels = [64]

    def shortcut(n_in, n_out, stride):
        if n_in != n_out:
            if released:
                return Sequential(conv(n_in, n_out, 1, stride, 0), sbn(n_out))
            return Sequential(conv(n_in, n_out, 1, stride, 0))
        return Identity()

    def block(n, stride, kind):
        n_in = i_channels[0]
        out = n * 4 if unit == "bottleneck" else n
        i_channels[0] = out
        blk = []
        s = []
        if released or kind == "preact":
            s += [sbn(n_in), ReLU()]
        elif kind == "both_preact":
            blk += [sbn(n_in), ReLU()]
        # kind == 'no_preact': nothing
        damp = 0.5  # keeps random-weight activations bounded through the residual sum
        if unit == "bottleneck":
            s += [conv(n_in, n, 1, 1, 0), sbn(n), ReLU(), conv(n, n, 3, stride, 1), sbn(n), ReLU(), conv(n, out, 1, 1, 0, scale=damp)]
        else:
            s += [conv(n_in, n, 3, stride, 1), sbn(n), ReLU(), conv(n, n, 3, 1, 1, scale=damp)]
        blk += [ConcatTable(Sequential(*s), shortcut(n_in, out, stride)), CAddTable()]
        return Sequential(*blk)

    def layer(features, count, stride, first):
        units = [block(features, stride, "no_preact" if first else "both_preact")]
        units += [block(features, 1, "preact") for _ in range(count - 1)]
        return Sequential(*units)

    mods = [conv(3, 64, 7, 2, 3), sbn(64), ReLU(), MaxPool()]
    for si, count in enumerate(stages):
        mods.append(layer(64 * 2**si, count, 1 if si == 0 else 2, si == 0))
    n_features = i_channels[0]
    mods += [Copy(), sbn(n_features), ReLU(), AvgPool(7), View(n_features), Linear(flat, rng, n_features, classes)]
    model = Sequential(*mods)
    flat.finish()
    return model


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", choices=("released", "current"), required=True)
    ap.add_argument("--unit", choices=("basic", "bottleneck"), required=True)
    ap.add_argument("--stages", required=True, help="units per stage, e.g. 2,1,1,2")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--t7", required=True, help="where to write the model")
    ap.add_argument("--long-size", type=int, choices=(4, 8), default=8, help="4 = as Lua Torch on Windows writes")
    ap.add_argument("--run", nargs=3, action="append", default=[], metavar=("INPUT", "SHAPE", "OUTPUT"))
    args = ap.parse_args(argv)

    model = build(args.variant, args.unit, [int(s) for s in args.stages.split(",")], args.classes, args.seed)
    w = T7Writer(long_size=args.long_size)
    w.obj(model.lua({}))
    with open(args.t7, "wb") as f:
        f.write(w.out)
    for inp, shape_text, out in args.run:
        shape = tuple(int(d) for d in shape_text.split(","))
        x = np.fromfile(inp, dtype="<f4").reshape(shape)
        with torch.no_grad():
            y = model.forward(torch.from_numpy(x.astype(np.float64)))
        y.numpy().astype("<f4").tofile(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
