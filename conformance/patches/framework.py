"""Patch generators for upstream framework faults found while porting (``conformance.findings``).

Each generator recognises the upstream layout by the function it edits and fails loudly
(``AnchorError``) when neither known layout is there.
"""

from __future__ import annotations

from pathlib import Path

from ._edits import AnchorError, Edits, locate

__all__ = [
    "REGISTRY_OPT_IN",
    "backward_lists_each_tensor_once",
    "batchnorm_float32_buffers",
    "broadcast_gradients",
    "checked_load_state_dict",
    "flops_counted_once",
    "fusion_keeps_wanted_gradients",
    "gradient_stored_as_a_copy",
    "numeric_pickles_by_name",
    "registry_opt_in",
    "tensor_dtype_from_data",
]

# The variable a maintainer sets to regenerate registry.json with the patched factories.
REGISTRY_OPT_IN = "LUCID_UPDATE_MODEL_REGISTRY"

_MATCH_GRAD_SHAPE = """\
    if data.shape == grad.shape:
        return grad
    if data.ndim == 0:
        return grad.sum()
    lib = np if device == "cpu" else mx
    if data.size == grad.size:
        # The same elements: axes of size 1 added or dropped, or an op that passes its
        # gradient on flattened.
        return grad.reshape(data.shape)

    # Broadcasting aligns shapes from the right. Seen that way, a gradient of another size
    # differs from its operand's shape only along axes where one of them has size 1 (or
    # lacks the axis). Where data has 1, the forward repeated data along that axis, so
    # its gradient is the sum over it; where grad has 1 (a reduction with keepdims, such
    # as a mean over the batch), every element along it contributed, so the gradient is
    # repeated along it. Summing first, then broadcasting, handles both at once.
    # (This module's namespace has lucid's max/min/sum/abs/round, not the builtins.)
    data_shape = (1,) * (grad.ndim - data.ndim) + tuple(data.shape)
    grad_shape = (1,) * (data.ndim - grad.ndim) + tuple(grad.shape)
    if all(d == g or d == 1 or g == 1 for d, g in zip(data_shape, grad_shape)):
        axes = tuple(
            i for i, (d, g) in enumerate(zip(data_shape, grad_shape)) if d == 1 and g != 1
        )
        grad = grad.reshape(grad_shape)
        if axes:
            grad = grad.sum(axis=axes, keepdims=True)
        return lib.broadcast_to(grad, data_shape).reshape(data.shape)
    raise ValueError(f"Cannot match grad of {grad.shape} to data of {data.shape}.")
"""


def broadcast_gradients(root: Path) -> dict[str, str]:
    """``_match_grad_shape``: reduce a broadcast gradient by summing over the broadcast axes
    and expand a reduced (keepdims) gradient by broadcasting it, both on right-aligned shapes,
    instead of reshaping either into data's leading axes."""
    edits = Edits(root)
    header = "def _match_grad_shape("
    edits.replace_span(
        locate(root, header),
        "    if data.shape == grad.shape:\n",
        '        raise ValueError("Unknown error occurred.")\n',
        _MATCH_GRAD_SHAPE,
        within=header,
    )
    return edits.changes()


_WHY_REGISTRY = f"""\
    # registry.json lives inside the installed package: writing it from user code
    # fails on read-only installs, and concurrent writers leave a truncated file.
    # It is a maintainers' index, updated on request only:
    # {REGISTRY_OPT_IN}=1.
"""

_ATOMIC_WRITE = """\
    # Write beside the file and rename over it: a reader never sees a partial file.
    partial = MODELS_REGISTRY_PATH.with_name(f"registry.json.{os.getpid()}.partial")
    with open(partial, "w") as f:
        json.dump(registry, f, indent=4)
    os.replace(partial, MODELS_REGISTRY_PATH)
"""

_UPDATE_REGISTRY_29 = (
    """\
def _update_models_registry(func: _ModuleReturnFunc, model: nn.Module) -> None:
    registry = {}
    if MODELS_REGISTRY_PATH.exists():
        with open(MODELS_REGISTRY_PATH, "r") as f:
            registry = json.load(f)

    name = func.__name__
    if name in registry:
        return
    registry[name] = dict(
        name=name,
        family=model.__class__.__name__,
        param_size=model.parameter_size,
        task=sys.modules[func.__module__].__package__.split(".")[2],
    )
    MODELS_REGISTRY_PATH.parent.mkdir(parents=True, exist_ok=True)
"""
    + _ATOMIC_WRITE
    + "\n\n"
)


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "".join(pad + line if line.strip() else line for line in text.splitlines(keepends=True))


def registry_opt_in(root: Path) -> dict[str, str]:
    """Factories stop writing ``lucid/models/registry.json`` unless a maintainer asks for it,
    and then write it atomically."""
    edits = Edits(root)
    path = locate(root, "def register_model(")
    if "def _maybe_register_model(" in edits.text(path):  # 2.10+
        header = "def _maybe_register_model("
        edits.insert_after(
            path,
            "def _maybe_register_model(target: Any, model: nn.Module, *, is_class: bool) -> None:\n",
            _WHY_REGISTRY + f'    if os.environ.get("{REGISTRY_OPT_IN}") != "1":\n        return\n\n',
            within=header,
        )
        edits.replace(
            path,
            '        with open(MODELS_REGISTRY_PATH, "w") as f:\n'
            "            json.dump(registry, f, indent=4)\n",
            _indent(_ATOMIC_WRITE, 4),
            within=header,
        )
    else:
        header = "def register_model("
        edits.insert_before(path, header, _UPDATE_REGISTRY_29, within=None)
        # From the registry read before the model is built through the write after it.
        edits.replace_span(
            path,
            "        if not MODELS_REGISTRY_PATH.exists():\n",
            "                json.dump(registry, f, indent=4)\n",
            "        model = func(*args, **kwargs)\n"
            "        model._alt_name = func.__name__\n"
            "\n" + _indent(_WHY_REGISTRY, 4) + f'        if os.environ.get("{REGISTRY_OPT_IN}") == "1":\n'
            "            _update_models_registry(func, model)\n",
            within=header,
        )
    return edits.changes()


def batchnorm_float32_buffers(root: Path) -> dict[str, str]:
    """BatchNorm/InstanceNorm running statistics are float32 like the parameters; float64
    buffers silently promote every eval-mode forward to float64."""
    edits = Edits(root)
    header = "class _NormBase("
    path = locate(root, header)
    for name, fill in (("running_mean", "zeros"), ("running_var", "ones")):
        edits.replace(
            path,
            f'            self.register_buffer("{name}", lucid.{fill}((num_features,)))\n',
            "            self.register_buffer(\n"
            f'                "{name}", lucid.{fill}((num_features,), dtype=lucid.Float32)\n'
            "            )\n",
            within=header,
        )
        edits.replace(
            path,
            f"            self.{name}.data = lucid.{fill}((self.num_features,)).data\n",
            f"            self.{name}.data = lucid.{fill}(\n"
            "                (self.num_features,), dtype=lucid.Float32\n"
            "            ).data\n",
            within=header,
        )
    return edits.changes()


_CHECK_STATE = """\
        # Convert and check every entry before assigning any, so a state dict with a
        # wrong shape leaves the module unchanged. Values take the dtype of the tensor
        # they replace and are copied: the module never shares the caller's arrays.
        loaded: dict[str, Tensor] = {}
        mismatched: list[str] = []
        for key, value in state_dict.items():
            attr = own_state.get(key)
            if isinstance(attr, (nn.Parameter, nn.Buffer)):
                loaded[key] = Tensor(value, dtype=attr.dtype, device=self.device)
                if loaded[key].shape != attr.shape:
                    mismatched.append(
                        f"{key}: expected {attr.shape}, got {loaded[key].shape}"
                    )
        if mismatched:
            raise ValueError(
                "Error(s) in loading state_dict, shape mismatch:\\n"
                + "\\n".join(mismatched)
            )

"""


def checked_load_state_dict(root: Path) -> dict[str, str]:
    """``Module.load_state_dict`` rejects wrong shapes before changing anything, casts to the
    module's dtypes and copies the arrays it is given (numpy on 'cpu', MLX on 'gpu')."""
    edits = Edits(root)
    path = locate(root, "\nclass Module:\n")
    header = "    def load_state_dict("
    if "keys_to_migrate = [" in edits.text(path):  # 2.10+
        first_loop = "        keys_to_migrate = [k for k in state_dict.keys() if k in own_state]\n"
    else:
        first_loop = "        for key, value in state_dict.items():\n            if key in own_state:\n"
    edits.insert_before(path, first_loop, _CHECK_STATE, within=header)
    # On the 'gpu' device the data are MLX arrays: ``mx.array(data)`` is a new array, which
    # the caller's later item assignments (MLX updates by replacing an array's data) cannot reach.
    edits.insert_before(path, "import lucid.nn as nn\n", "import mlx.core as mx\n")
    edits.replace(
        path,
        "                    value_t = Tensor(value, device=self.device)\n"
        "                    attr.data = value_t.data\n",
        "                    data = loaded[key].data\n"
        "                    attr.data = (\n"
        "                        data.copy() if isinstance(data, _NumPyArray) else mx.array(data)\n"
        "                    )\n",
        within=header,
    )
    return edits.changes()


_NUMERIC_TYPE = """\


# The Numeric (or bool) of each array dtype seen: Tensor.dtype is read on every operation.
_numeric_types: dict = {}


def _numeric_type(data_dtype) -> Numeric | type[bool]:
    numeric = _numeric_types.get(data_dtype)
    if numeric is None:
        if "bool" in str(data_dtype):
            numeric = bool
        else:
            numeric = types.to_numeric_type(data_dtype)
        _numeric_types[data_dtype] = numeric
    return numeric
"""

_DTYPE_PROPERTY = """\
    @property
    def dtype(self) -> Numeric | bool:
        # Read from the data on every access: code assigns `.data` directly (as
        # load_state_dict does), and a dtype stored at construction then described an
        # array that was gone; as the dtype of scalar operands it silently turned
        # float32 computations float64.
        return _numeric_type(self.data.dtype)

    @dtype.setter
    def dtype(self, value: Numeric | bool) -> None:
        # In-place operations restate the dtype after assigning `.data`: the data's own
        # dtype is accepted; naming another would mislabel the data (astype() converts).
        if value is not self.dtype:
            raise ValueError(
                f"a Tensor's dtype is that of its data: expected {self.dtype}, got {value}; "
                "use astype() to convert"
            )

"""


def tensor_dtype_from_data(root: Path) -> dict[str, str]:
    """``Tensor.dtype`` is read from ``data`` instead of stored at construction, so assigning
    ``.data`` (as ``load_state_dict`` does) cannot leave a float64 dtype on float32 data."""
    edits = Edits(root)
    header = "class Tensor("
    path = locate(root, "\n" + header)
    edits.insert_after(
        path,
        "_dtype_map = {int: types.Int64, float: types.Float64, complex: types.Complex64}\n",
        _NUMERIC_TYPE,
    )
    edits.replace(
        path,
        "\n        self.dtype: Numeric | bool\n"
        "        if self._is_bool_tensor:\n"
        "            self.dtype = bool\n"
        "        else:\n"
        "            self.dtype = (\n"
        "                dtype if dtype is not None else types.to_numeric_type(self.data.dtype)\n"
        "            )\n",
        "",
        within=header,
    )
    edits.insert_before(path, "    @property\n    def is_leaf(self)", _DTYPE_PROPERTY, within=header)
    edits.replace(
        path,
        "        self.data = self.data.astype(new_dtype)\n"
        "        if self._is_bool_tensor:\n"
        "            self.dtype = bool\n"
        "        else:\n"
        "            self.dtype = types.to_numeric_type(self.data.dtype)\n",
        "        self.data = self.data.astype(new_dtype)\n",
        within=header,
    )
    return edits.changes()


def backward_lists_each_tensor_once(root: Path) -> dict[str, str]:
    """The backward's depth-first sort appends a tensor to ``topo_order`` only the first time
    it is finished, so a tensor that two consumers pushed (``x * x``; a residual's input,
    read again by its branch) runs its backward once, on its whole gradient."""
    edits = Edits(root)
    path = locate(root, "topo_order.append(")
    if "\n    def backward(self, keep_grad" in edits.text(path):  # 2.9.0: the method Tensor.backward
        header, name, pad = "    def backward(", "tensor", " " * 8
    else:  # 2.10+: lucid.autograd.backward, which Tensor.backward calls
        header, name, pad = "def backward(", "node", " " * 4
    edits.insert_after(
        path,
        f"{pad}visited = set()\n",
        f"{pad}listed = set()  # in topo_order already\n",
        within=header,
    )
    edits.replace(
        path,
        f"{pad}    if {name} in visited:\n"
        f"{pad}        stack.pop()\n"
        f"{pad}        topo_order.append({name})\n"
        f"{pad}        continue\n",
        f"{pad}    if {name} in visited:\n"
        f"{pad}        stack.pop()\n"
        f"{pad}        # Two consumers can push a {name} before it is visited (both operands of\n"
        f"{pad}        # `x * x`; a residual's input, read again by its branch): it surfaces once\n"
        f"{pad}        # per push. Listed twice, its backward would run twice, the second time on\n"
        f"{pad}        # a cleared gradient (None) or, when gradients are kept, passing on again\n"
        f"{pad}        # the part it already passed on.\n"
        f"{pad}        if {name} not in listed:\n"
        f"{pad}            listed.add({name})\n"
        f"{pad}            topo_order.append({name})\n"
        f"{pad}        continue\n",
        within=header,
    )
    return edits.changes()


def fusion_keeps_wanted_gradients(root: Path) -> dict[str, str]:
    """The backward fusion (2.10+) leaves alone a tensor whose own gradient is wanted: one
    with a backward hook or ``keep_grad``, and every tensor when the backward keeps all
    gradients (``retain_grad``) or the graph (``retain_graph``: a later backward,
    ``lucid.autograd.grad`` or hook on the retained graph must find it unfused)."""
    edits = Edits(root)
    path = locate(root, "def _try_backward_fusion(")
    edits.replace(
        path,
        "    if lucid.USE_BAKCWARD_FUSION and tensor.is_cpu():\n",
        "    # A fused tensor's own backward never runs: it gets no gradient, and the fusion\n"
        "    # rewires the graph for good. Keep every gradient (retain_grad) or the graph for\n"
        "    # another backward (retain_graph): fuse nothing.\n"
        "    if (\n"
        "        lucid.USE_BAKCWARD_FUSION\n"
        "        and tensor.is_cpu()\n"
        "        and not (retain_grad or retain_graph)\n"
        "    ):\n",
        within="def backward(",
    )
    edits.insert_after(
        path,
        "        if p._op is None or v._op is None:\n            continue\n",
        "        if p._backward_hooks or p.keep_grad:  # its gradient is wanted: it must get one\n"
        "            continue\n",
        within="def _try_backward_fusion(",
    )
    return edits.changes()


_CONV_FLOPS = """\
    def __flops__(self, a: Tensor, b: Tensor) -> int:
        # Multiply-adds, as lucid-dl 2.10+ counts them: every output element sums
        # C_in / groups * prod(kernel) products (weight b: C_out x C_in / groups x kernel).
        stride, padding, dilation = self._normalize(b)
        outputs = int(a.shape[0]) * int(b.shape[0])
        for size, k, s, p, d in zip(a.shape[2:], b.shape[2:], stride, padding, dilation):
            outputs *= (int(size) + 2 * p - d * (int(k) - 1) - 1) // s + 1
        per_output = 1
        for k in b.shape[1:]:
            per_output *= int(k)
        return outputs * per_output

"""


def flops_counted_once(root: Path) -> dict[str, str]:
    """``Tensor.flops`` counts each operation of the graph once (it counted a tensor again
    for every consumer that pushed it before it was visited, and an op with several outputs
    once per output), and on 2.9.0 the convolution op counts its multiply-adds (it counted
    none: no ``__flops__``)."""
    edits = Edits(root)
    path = locate(root, "    def flops(self) -> int:\n        total = 0\n")
    header = "    def flops(self) -> int:"
    edits.insert_after(
        path,
        "        visited = set()\n",
        "        counted = set()  # ids of the ops counted\n",
        within=header,
    )
    edits.replace(
        path,
        "            cur = queue.popleft()\n"
        "            visited.add(cur)\n"
        "            if cur._op is not None:\n"
        "                total += cur._op.flops\n",
        "            cur = queue.popleft()\n"
        "            if cur in visited:  # pushed again by a second consumer: counted already\n"
        "                continue\n"
        "            visited.add(cur)\n"
        "            # An op with several outputs (q and r of qr) is every output's _op: count\n"
        "            # it once.\n"
        "            if cur._op is not None and id(cur._op) not in counted:\n"
        "                counted.add(id(cur._op))\n"
        "                total += cur._op.flops\n",
        within=header,
    )
    try:
        kernel = locate(root, "\nclass conv_nd_kernel(")  # 2.10+
    except AnchorError:
        kernel = None
    if kernel is not None and _counts_flops(edits.text(kernel), "\nclass conv_nd_kernel("):
        return edits.changes()
    header = "\nclass conv_nd(operation)"  # 2.9.0
    conv = locate(root, header)
    if _counts_flops(edits.text(conv), header):
        raise AnchorError(f"{conv}: conv_nd counts its flops already; review this generator")
    grad = "    def __grad__(self, a: Tensor, b: Tensor, lib_"
    edits.insert_before(conv, grad, _CONV_FLOPS, within="class conv_nd(")
    return edits.changes()


def _counts_flops(text: str, header: str) -> bool:
    """Whether the class headed ``header`` in ``text`` defines ``__flops__``."""
    body = text.partition(header)[2].split("\nclass ")[0]
    return "    def __flops__(" in body


def gradient_stored_as_a_copy(root: Path) -> dict[str, str]:
    """``_set_tensor_grad`` stores a copy of a tensor's first gradient, so the array it later
    accumulates into in place is the tensor's own: add's backward hands one array to both
    operands, and adding to one operand's gradient added to the other's."""
    edits = Edits(root)
    header = "def _set_tensor_grad("
    edits.replace(
        locate(root, header),
        "    if tensor.grad is None:\n        tensor.grad = grad\n",
        "    if tensor.grad is None:\n"
        "        # A copy: the array given can be another tensor's gradient too (add's backward\n"
        "        # hands one array to both operands), and the next gradient is added to the one\n"
        "        # stored in place, which would change every tensor holding it.\n"
        "        tensor.grad = grad.copy() if tensor.is_cpu() else mx.array(grad)\n",
        within=header,
    )
    return edits.changes()


_NUMERIC_REDUCE = """\
    def __reduce__(self) -> str | tuple:
        # Pickled by name: this module's constants (Float32, Int64, ...) unpickle as
        # themselves, so `dtype is Float32` still holds; any other Numeric is rebuilt
        # from what defines it. Pickle refuses the mlx.core.Dtype it holds, which the
        # loading process works out again for its own default device.
        for name, value in globals().items():
            if value is self:
                return name
        return (Numeric, (self.base_dtype, self.bits))

"""


_NOOP_REDUCE = """\
    def __reduce_ex__(self, protocol: int) -> str | tuple:
        # Every leaf tensor holds the shared `noop`, whose grad_func is a lambda that
        # pickle refuses: it pickles by name and unpickles as the same `noop`.
        if self is noop:
            return "noop"
        return super().__reduce_ex__(protocol)

"""


def numeric_pickles_by_name(root: Path) -> dict[str, str]:
    """``Numeric.__reduce__``: a dtype pickles as the name of its ``lucid.types`` constant (or
    as its base type and bits), never through its ``mlx.core.Dtype``; and on 2.16.0, where
    every leaf tensor holds the module-level ``noop`` ``BackwardOperation`` (a lambda
    inside), that ``noop`` pickles by name. So tensors, parameters and modules pickle."""
    edits = Edits(root)
    header = "class Numeric:"
    path = locate(root, "\n" + header)
    edits.insert_before(path, "    @property\n    def cpu(self)", _NUMERIC_REDUCE, within=header)
    noop = "\nnoop = BackwardOperation("
    if any(noop in p.read_text(encoding="utf-8") for p in (root / "lucid").rglob("*.py")):
        header = "class BackwardOperation:"
        path = locate(root, noop)
        edits.insert_before(path, "    def override_grad_func(self", _NOOP_REDUCE, within=header)
    return edits.changes()
