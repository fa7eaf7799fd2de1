"""TensorProto <-> numpy the way TF Serving's `Tensor::AsProtoField` writes them (typed `*_val` fields)."""
from __future__ import annotations

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.python.framework import tensor_util

from serving.errors import invalid

NUMPY_BY_DTYPE = {
    types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64, types_pb2.DT_INT32: np.int32,
    types_pb2.DT_INT64: np.int64, types_pb2.DT_INT16: np.int16, types_pb2.DT_INT8: np.int8,
    types_pb2.DT_UINT8: np.uint8, types_pb2.DT_UINT16: np.uint16, types_pb2.DT_UINT32: np.uint32,
    types_pb2.DT_UINT64: np.uint64, types_pb2.DT_BOOL: np.bool_, types_pb2.DT_STRING: np.object_,
    types_pb2.DT_HALF: np.float16,
}
DTYPE_BY_NUMPY = {np.dtype(v): k for k, v in NUMPY_BY_DTYPE.items() if v is not np.object_}

# Which repeated field AsProtoField fills for each dtype.
_VALUE_FIELD = {
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val", types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT16: "int_val", types_pb2.DT_INT8: "int_val", types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val", types_pb2.DT_INT64: "int64_val", types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val", types_pb2.DT_BOOL: "bool_val", types_pb2.DT_STRING: "string_val",
}


# TF's DataType enum numbers each reference type (a variable's DT_FLOAT_REF) as its value type + 100.
_REF_OFFSET = 100

# Dtypes a request cannot carry as values: handles, variants and reference types exist only inside a graph.
_NOT_FROM_REQUESTS = {types_pb2.DT_INVALID, types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT} | {
    value for value in types_pb2.DataType.values() if value > _REF_OFFSET}


def base_dtype(dtype: int) -> int:
    """DT_FLOAT_REF -> DT_FLOAT: a fetched variable is a plain tensor of its value type."""
    return dtype - _REF_OFFSET if dtype > _REF_OFFSET else dtype


def dtype_name(dtype: int) -> str:
    """DT_FLOAT -> 'float', as TF error messages spell it."""
    return types_pb2.DataType.Name(dtype)[3:].lower()


def _elements_carried(proto: tensor_pb2.TensorProto) -> int:
    """Upper bound of the elements a TensorProto's payload holds: tensor_content bytes or the longest *_val field."""
    carried = len(proto.tensor_content)
    for field, value in proto.ListFields():
        if field.label == field.LABEL_REPEATED and field.name.endswith("_val"):
            carried = max(carried, len(value))
    return carried


def checked_shape(proto: tensor_pb2.TensorProto, max_implied_elements: int) -> list[int]:
    """The declared shape, refused (INVALID_ARGUMENT, before anything is allocated) when a dimension is negative or
    the shape claims more than `max_implied_elements` elements beyond what the proto carries."""
    shape = [d.size for d in proto.tensor_shape.dim]
    if any(size < 0 for size in shape):
        raise invalid(f"Invalid TensorProto: negative dimension in tensor_shape {shape}")
    elements = 1
    for size in shape:
        elements *= size  # Python ints: no overflow for 1e5 x 1e5 x ...
    carried = _elements_carried(proto)
    if elements - carried > max_implied_elements:
        raise invalid(f"Invalid TensorProto: tensor_shape {shape} declares {elements} elements but the request "
                      f"carries {carried} values; at most {max_implied_elements} elements may be filled in "
                      "(--max_implied_tensor_elements)")
    return shape


def dtype_of(array: np.ndarray) -> int:
    if array.dtype == np.object_ or array.dtype.kind in "SU":
        return types_pb2.DT_STRING
    try:
        return DTYPE_BY_NUMPY[array.dtype]
    except KeyError:
        raise invalid(f"Unsupported tensor type: {array.dtype}") from None


def to_numpy(proto: tensor_pb2.TensorProto, max_implied_elements: int) -> np.ndarray:
    """Any valid TensorProto (tensor_content or typed values, incl. the one-value broadcast) -> ndarray.

    TF fills the values a proto leaves out with the last one sent (or zeros); at most `max_implied_elements` of them
    (see `checked_shape`), so a few bytes of request cannot make the server allocate gigabytes.
    """
    shape = checked_shape(proto, max_implied_elements)
    if proto.dtype == types_pb2.DT_STRING:
        values = list(proto.string_val)
        size = int(np.prod(shape)) if shape else 1
        if len(values) == 1 and size != 1:
            values = values * size
        if len(values) != size:
            raise invalid(f"Invalid TensorProto: {len(values)} string values for shape {shape}")
        array = np.empty(size, dtype=object)
        array[:] = values
        return array.reshape(shape)
    if proto.dtype in _NOT_FROM_REQUESTS or proto.dtype not in types_pb2.DataType.values():
        name = types_pb2.DataType.Name(proto.dtype) if proto.dtype in types_pb2.DataType.values() else proto.dtype
        raise invalid(f"Invalid TensorProto: unsupported dtype {name}")
    try:
        return tensor_util.MakeNdarray(proto)
    except (TypeError, ValueError, OverflowError) as error:  # OverflowError: an int_val out of the dtype's range
        raise invalid(f"Invalid TensorProto: {error}") from None


def to_proto(array: np.ndarray, dtype: int | None = None) -> tensor_pb2.TensorProto:
    """ndarray -> TensorProto with typed `*_val` fields and the shape, like AsProtoField."""
    array = np.asarray(array)
    dtype = dtype_of(array) if dtype is None else base_dtype(dtype)
    if dtype not in _VALUE_FIELD and dtype != types_pb2.DT_HALF:
        return tensor_util.make_tensor_proto(array)  # complex, bfloat16, ...: TF's own encoding
    proto = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in array.shape]))
    flat = array.reshape(-1)
    if dtype == types_pb2.DT_STRING:
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in flat)
    elif dtype == types_pb2.DT_HALF:
        proto.half_val.extend(flat.astype(np.float16).view(np.uint16).tolist())
    else:
        getattr(proto, _VALUE_FIELD[dtype]).extend(flat.tolist())
    return proto
