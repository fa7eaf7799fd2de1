"""TensorProto <-> numpy the way TF Serving's `Tensor::AsProtoField` writes them (typed `*_val` fields)."""
from __future__ import annotations

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

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


def dtype_name(dtype: int) -> str:
    """DT_FLOAT -> 'float', as TF error messages spell it."""
    return types_pb2.DataType.Name(dtype)[3:].lower()


def dtype_of(array: np.ndarray) -> int:
    if array.dtype == np.object_ or array.dtype.kind in "SU":
        return types_pb2.DT_STRING
    try:
        return DTYPE_BY_NUMPY[array.dtype]
    except KeyError:
        raise invalid(f"Unsupported tensor type: {array.dtype}") from None


def to_numpy(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """Any valid TensorProto (tensor_content or typed values, incl. the one-value broadcast) -> ndarray."""
    from tensorflow.python.framework import tensor_util

    if proto.dtype == types_pb2.DT_STRING:
        shape = [d.size for d in proto.tensor_shape.dim]
        values = list(proto.string_val)
        size = int(np.prod(shape)) if shape else 1
        if len(values) == 1 and size != 1:
            values = values * size
        if len(values) != size:
            raise invalid(f"Invalid TensorProto: {len(values)} string values for shape {shape}")
        array = np.empty(size, dtype=object)
        array[:] = values
        return array.reshape(shape)
    try:
        return tensor_util.MakeNdarray(proto)
    except (TypeError, ValueError) as error:
        raise invalid(f"Invalid TensorProto: {error}") from None


def to_proto(array: np.ndarray, dtype: int | None = None) -> tensor_pb2.TensorProto:
    """ndarray -> TensorProto with typed `*_val` fields and the shape, like AsProtoField."""
    array = np.asarray(array)
    dtype = dtype_of(array) if dtype is None else dtype
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
