#include "ckptdb/tensor.h"

#include <cstring>
#include <new>
#include <string>

namespace ckptdb {
namespace {

struct DTypeInfo {
  DType dtype;
  size_t size;
  bool is_float;
  std::string_view name;
};

// Names follow numpy/ml_dtypes (and so safetensors' lower-case spelling).
constexpr DTypeInfo kDTypes[] = {
    {DType::kBool, 1, false, "bool"},
    {DType::kInt8, 1, false, "int8"},
    {DType::kInt16, 2, false, "int16"},
    {DType::kInt32, 4, false, "int32"},
    {DType::kInt64, 8, false, "int64"},
    {DType::kUInt8, 1, false, "uint8"},
    {DType::kUInt16, 2, false, "uint16"},
    {DType::kUInt32, 4, false, "uint32"},
    {DType::kUInt64, 8, false, "uint64"},
    {DType::kFloat16, 2, true, "float16"},
    {DType::kBFloat16, 2, true, "bfloat16"},
    {DType::kFloat32, 4, true, "float32"},
    {DType::kFloat64, 8, true, "float64"},
    {DType::kFloat8E4M3FN, 1, true, "float8_e4m3fn"},
    {DType::kFloat8E5M2, 1, true, "float8_e5m2"},
};

const DTypeInfo* FindDType(DType dtype) {
  for (const DTypeInfo& info : kDTypes) {
    if (info.dtype == dtype) return &info;
  }
  return nullptr;
}

// Sizes stay below 2^62 so that offsets and sums of a few never overflow.
constexpr uint64_t kMaxCount = uint64_t{1} << 62;

Status CheckBuffer(const Tensor& tensor, const void* data) {
  if (data == nullptr && tensor.byte_size() > 0) {
    return Status::InvalidArgument("tensor view of " + std::to_string(tensor.byte_size()) +
                                   " bytes over a null pointer");
  }
  return Status::OK();
}

}  // namespace

size_t DTypeSize(DType dtype) {
  const DTypeInfo* info = FindDType(dtype);
  return info == nullptr ? 0 : info->size;
}

bool DTypeIsFloat(DType dtype) {
  const DTypeInfo* info = FindDType(dtype);
  return info != nullptr && info->is_float;
}

std::string_view DTypeName(DType dtype) {
  const DTypeInfo* info = FindDType(dtype);
  return info == nullptr ? "unknown" : info->name;
}

Result<DType> DTypeFromName(std::string_view name) {
  for (const DTypeInfo& info : kDTypes) {
    if (info.name == name) return info.dtype;
  }
  return Status::NotFound("unknown dtype '" + std::string(name) + "'");
}

bool IsKnownDType(uint8_t raw) { return FindDType(static_cast<DType>(raw)) != nullptr; }

Result<uint64_t> ElementCount(const std::vector<int64_t>& shape) {
  uint64_t count = 1;
  for (int64_t dim : shape) {
    if (dim < 0) {
      return Status::InvalidArgument("negative dimension " + std::to_string(dim) + " in shape");
    }
    if (dim != 0 && count > kMaxCount / static_cast<uint64_t>(dim)) {
      return Status::InvalidArgument("shape has more than 2^62 elements");
    }
    count *= static_cast<uint64_t>(dim);
  }
  return count;
}

Result<uint64_t> TensorByteSize(DType dtype, const std::vector<int64_t>& shape) {
  size_t element_size = DTypeSize(dtype);
  if (element_size == 0) {
    return Status::InvalidArgument("unknown dtype " + std::to_string(static_cast<int>(dtype)));
  }
  Result<uint64_t> count = ElementCount(shape);
  if (!count.ok()) return count.status();
  if (*count > kMaxCount / element_size) {
    return Status::InvalidArgument("tensor of more than 2^62 bytes");
  }
  return *count * element_size;
}

Tensor::Tensor() : shape_{0} {}

Result<Tensor> Tensor::View(DType dtype, std::vector<int64_t> shape, void* data) {
  Result<Tensor> tensor = ConstView(dtype, std::move(shape), data);
  if (tensor.ok()) tensor->mutable_data_ = static_cast<std::byte*>(data);
  return tensor;
}

Result<Tensor> Tensor::Shaped(DType dtype, std::vector<int64_t> shape) {
  Result<uint64_t> byte_size = TensorByteSize(dtype, shape);
  if (!byte_size.ok()) return byte_size.status();
  Tensor tensor;
  tensor.dtype_ = dtype;
  tensor.shape_ = std::move(shape);
  tensor.byte_size_ = *byte_size;
  return tensor;
}

Result<Tensor> Tensor::ConstView(DType dtype, std::vector<int64_t> shape, const void* data) {
  Result<Tensor> tensor = Shaped(dtype, std::move(shape));
  if (!tensor.ok()) return tensor;
  tensor->data_ = static_cast<const std::byte*>(data);
  Status status = CheckBuffer(*tensor, data);
  if (!status.ok()) return status;
  return tensor;
}

Result<Tensor> Tensor::Allocate(DType dtype, std::vector<int64_t> shape) {
  Result<Tensor> shaped = Shaped(dtype, std::move(shape));
  if (!shaped.ok()) return shaped;
  Tensor& tensor = *shaped;
  // make_shared<T[]>(n) value-initializes: the buffer starts zeroed. At least
  // one byte so that an owned empty tensor still reports owns_data().
  try {
    tensor.owner_ = std::make_shared<std::byte[]>(tensor.byte_size_ == 0 ? 1 : tensor.byte_size_);
  } catch (const std::bad_alloc&) {
    return Status::InvalidArgument("cannot allocate a tensor of " +
                                   std::to_string(tensor.byte_size_) + " bytes");
  }
  tensor.data_ = tensor.mutable_data_ = tensor.owner_.get();
  return shaped;
}

Tensor Tensor::CopyOf(const Tensor& source) {
  Tensor copy = Allocate(source.dtype_, source.shape_).value();
  if (source.byte_size_ > 0) std::memcpy(copy.mutable_data_, source.data_, source.byte_size_);
  return copy;
}

bool Tensor::ContentEquals(const Tensor& other) const {
  return dtype_ == other.dtype_ && shape_ == other.shape_ && byte_size_ == other.byte_size_ &&
         (byte_size_ == 0 || std::memcmp(data_, other.data_, byte_size_) == 0);
}

}  // namespace ckptdb
