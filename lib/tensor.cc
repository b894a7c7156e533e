#include "ckptdb/tensor.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <string>

#include "huge_pages.h"

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

std::string ShapeString(const std::vector<int64_t>& shape) {
  constexpr size_t kMaxShown = 16;
  std::string text = "[";
  for (size_t i = 0; i < shape.size() && i < kMaxShown; ++i) {
    if (i > 0) text += ", ";
    text += std::to_string(shape[i]);
  }
  if (shape.size() > kMaxShown) text += ", ... (" + std::to_string(shape.size()) + " dimensions)";
  return text + "]";
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
  if (tensor.ok()) tensor->writable_ = true;
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
  // Borrowed: a pointer with no owner (writable only through View).
  tensor->buffer_ = std::shared_ptr<std::byte[]>(
      std::shared_ptr<std::byte[]>(), static_cast<std::byte*>(const_cast<void*>(data)));
  Status status = CheckBuffer(*tensor, data);
  if (!status.ok()) return status;
  return tensor;
}

namespace {

// Buffers from kMappedBytes on come straight from the kernel: their pages
// are zero without a memset, and whoever writes them first faults them in
// (a memset faults every page in before that: a restore of 256 MiB into
// buffers from make_shared spent a fifth of its time in page faults and
// zeroing). From a huge page on, transparent huge pages are advised: 2 MiB
// a fault instead of 4 KiB. Smaller buffers are not worth a mapping (two
// system calls and a kernel mapping each). Restores pack their tensors
// below a huge page into shared blocks instead (TensorArena). Returns
// `bytes` zero bytes, owned by the returned pointer; nullptr when memory is
// short.
constexpr size_t kMappedBytes = size_t{64} << 10;

std::shared_ptr<std::byte[]> AllocateZeroed(size_t bytes) {
  std::byte* data = bytes >= kHugePageBytes ? MapHugePages(bytes)
                    : bytes >= kMappedBytes ? MapPages(bytes)
                                            : nullptr;
  try {
    if (data == nullptr) {
      // Small, or no mapping to be had (the process may be at the kernel's
      // limit of mappings): make_shared<T[]>(n) value-initializes. At least
      // one byte, so that null means only that memory is short.
      return std::make_shared<std::byte[]>(bytes == 0 ? 1 : bytes);
    }
    return std::shared_ptr<std::byte[]>(data, [bytes](std::byte* p) { UnmapPages(p, bytes); });
  } catch (const std::bad_alloc&) {  // a mapping's deleter has unmapped it
    return nullptr;
  }
}

}  // namespace

Result<Tensor> Tensor::Allocate(DType dtype, std::vector<int64_t> shape) {
  Result<Tensor> shaped = Shaped(dtype, std::move(shape));
  if (!shaped.ok()) return shaped;
  Tensor& tensor = *shaped;
  tensor.buffer_ = AllocateZeroed(tensor.byte_size_);
  if (tensor.buffer_ == nullptr) {
    return Status::InvalidArgument("cannot allocate a tensor of " +
                                   std::to_string(tensor.byte_size_) + " bytes");
  }
  tensor.writable_ = tensor.owned_ = true;
  return shaped;
}

Tensor Tensor::CopyOf(const Tensor& source) {
  Tensor copy = Allocate(source.dtype_, source.shape_).value();
  if (source.byte_size_ > 0) std::memcpy(copy.mutable_data(), source.data(), source.byte_size_);
  return copy;
}

bool Tensor::ContentEquals(const Tensor& other) const {
  return dtype_ == other.dtype_ && shape_ == other.shape_ && byte_size_ == other.byte_size_ &&
         (byte_size_ == 0 || std::memcmp(data(), other.data(), byte_size_) == 0);
}

Status Tensor::CheckElementType(DType wanted, bool writing) const {
  if (dtype_ != wanted) {
    return Status::InvalidArgument("typed access as " + std::string(DTypeName(wanted)) +
                                   " to a " + std::string(DTypeName(dtype_)) + " tensor");
  }
  if (writing && !writable()) {
    return Status::InvalidArgument("writable access to a read-only tensor view");
  }
  return Status::OK();
}

namespace {

// Rounds the float32 bits `bits` to their top 16 bits, ties to even (NaN
// kept quiet).
uint16_t RoundToUpperHalf(uint32_t bits) {
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

// A float8 format: exponent and mantissa widths, exponent bias, and whether
// the all-ones exponent is reserved for infinities and NaNs (E5M2, as IEEE)
// or only exponent and mantissa all ones are NaN (E4M3FN).
struct Float8Format {
  int exponent_bits;
  int mantissa_bits;
  int bias;
  bool ieee_special;
};
constexpr Float8Format kE4M3FN{4, 3, 7, false};
constexpr Float8Format kE5M2{5, 2, 15, true};

float Float8ToFloat(uint8_t bits, const Float8Format& format) {
  const bool negative = (bits & 0x80) != 0;
  const int exponent_all_ones = (1 << format.exponent_bits) - 1;
  const int exponent = (bits >> format.mantissa_bits) & exponent_all_ones;
  const int mantissa = bits & ((1 << format.mantissa_bits) - 1);
  float magnitude;
  if (format.ieee_special && exponent == exponent_all_ones) {
    magnitude = mantissa == 0 ? std::numeric_limits<float>::infinity()
                              : std::numeric_limits<float>::quiet_NaN();
  } else if (!format.ieee_special && exponent == exponent_all_ones &&
             mantissa == (1 << format.mantissa_bits) - 1) {
    magnitude = std::numeric_limits<float>::quiet_NaN();
  } else if (exponent == 0) {  // zero and subnormals
    magnitude = std::ldexp(static_cast<float>(mantissa),
                           1 - format.bias - format.mantissa_bits);
  } else {
    magnitude = std::ldexp(static_cast<float>(mantissa + (1 << format.mantissa_bits)),
                           exponent - format.bias - format.mantissa_bits);
  }
  return negative ? -magnitude : magnitude;
}

uint8_t FloatToFloat8(float value, const Float8Format& format) {
  const uint8_t sign = std::signbit(value) ? 0x80 : 0;
  const int exponent_all_ones = (1 << format.exponent_bits) - 1;
  const int mantissa_all_ones = (1 << format.mantissa_bits) - 1;
  const uint8_t nan = static_cast<uint8_t>(
      sign | (exponent_all_ones << format.mantissa_bits) | mantissa_all_ones);
  const uint8_t overflow =
      format.ieee_special ? static_cast<uint8_t>(sign | (exponent_all_ones << format.mantissa_bits))
                          : nan;
  if (std::isnan(value)) return nan;
  const double magnitude = std::fabs(static_cast<double>(value));
  if (std::isinf(magnitude)) return overflow;
  const int min_exponent = 1 - format.bias;  // of the smallest normal
  const int max_exponent = exponent_all_ones - (format.ieee_special ? 1 : 0) - format.bias;
  const double largest =
      std::ldexp(2.0 - std::ldexp(1.0, format.ieee_special ? -format.mantissa_bits
                                                           : 1 - format.mantissa_bits),
                 max_exponent);
  // Round to the grid of the magnitude's binade (the subnormal grid below the
  // normals), ties to even: the quotient is exact in double, nearbyint
  // rounds ties to even under the default rounding mode.
  int exponent = magnitude == 0 ? min_exponent : std::ilogb(magnitude);
  exponent = std::max(exponent, min_exponent);
  const double quantum = std::ldexp(1.0, exponent - format.mantissa_bits);
  const double rounded = std::nearbyint(magnitude / quantum) * quantum;
  if (rounded > largest) return overflow;
  if (rounded < std::ldexp(1.0, min_exponent)) {
    return static_cast<uint8_t>(sign | static_cast<int>(rounded / std::ldexp(1.0, min_exponent -
                                                                          format.mantissa_bits)));
  }
  const int rounded_exponent = std::ilogb(rounded);
  const int mantissa =
      static_cast<int>(std::ldexp(rounded, format.mantissa_bits - rounded_exponent)) -
      (1 << format.mantissa_bits);
  return static_cast<uint8_t>(sign | ((rounded_exponent + format.bias) << format.mantissa_bits) |
                              mantissa);
}

}  // namespace

float ToFloat(Float8E4M3FN value) { return Float8ToFloat(value.bits, kE4M3FN); }
float ToFloat(Float8E5M2 value) { return Float8ToFloat(value.bits, kE5M2); }
Float8E4M3FN ToFloat8E4M3FN(float value) { return {FloatToFloat8(value, kE4M3FN)}; }
Float8E5M2 ToFloat8E5M2(float value) { return {FloatToFloat8(value, kE5M2)}; }

float ToFloat(BFloat16 value) { return std::bit_cast<float>(uint32_t{value.bits} << 16); }

BFloat16 ToBFloat16(float value) { return {RoundToUpperHalf(std::bit_cast<uint32_t>(value))}; }

float ToFloat(Float16 value) {
  const uint32_t sign = uint32_t{value.bits & 0x8000u} << 16;
  const uint32_t exponent = (value.bits >> 10) & 0x1fu;
  const uint32_t mantissa = value.bits & 0x3ffu;
  if (exponent == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  if (exponent != 0) {
    return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
  }
  // Zero and subnormals: mantissa x 2^-24, exact in float.
  const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
  return sign != 0 ? -magnitude : magnitude;
}

Float16 ToFloat16(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const auto sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return {static_cast<uint16_t>(sign | 0x7e00u)};  // NaN
  if (magnitude >= 0x477ff000u) return {static_cast<uint16_t>(sign | 0x7c00u)};  // overflow
  if (magnitude < 0x38800000u) {
    // Subnormal or zero in float16: round magnitude x 2^24 to an integer,
    // ties to even (nearbyint under the default rounding mode).
    const float scaled = std::bit_cast<float>(magnitude) * 0x1p24f;
    return {static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(scaled)))};
  }
  // Normal: rebias the exponent, round the 13 dropped mantissa bits.
  const uint32_t rebased = magnitude - (112u << 23);
  const uint32_t rounding = 0xfffu + ((rebased >> 13) & 1u);
  return {static_cast<uint16_t>(sign | ((rebased + rounding) >> 13))};
}

}  // namespace ckptdb
