// The Python binding's native part: trees of numpy arrays and scalars to
// ckptdb::Tree and back without copying tensor bytes, and the Checkpointer
// with the GIL released while it works. The Kauldron-style interface is in
// __init__.py, over this module.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <bit>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ckptdb/ckptdb.h"

namespace py = pybind11;

namespace ckptdb::python {
namespace {

// ckptdb.CorruptionError: stored bytes failed a check (an OSError).
PyObject* corruption_error = nullptr;

// Raises the Python exception of `status`'s kind, with its message.
[[noreturn]] void Raise(const Status& status) {
  PyObject* kind = PyExc_RuntimeError;
  switch (status.code()) {
    case Status::Code::kNotFound:
      kind = PyExc_FileNotFoundError;
      break;
    case Status::Code::kAlreadyExists:
      kind = PyExc_FileExistsError;
      break;
    case Status::Code::kInvalidArgument:
      kind = PyExc_ValueError;
      break;
    case Status::Code::kCorruption:
      kind = corruption_error;
      break;
    case Status::Code::kIOError:
      kind = PyExc_OSError;
      break;
    case Status::Code::kNotSupported:
      kind = PyExc_NotImplementedError;
      break;
    case Status::Code::kBusy:
      kind = PyExc_BlockingIOError;
      break;
    default:
      break;
  }
  PyErr_SetString(kind, status.message().c_str());
  throw py::error_already_set();
}

void Check(const Status& status) {
  if (!status.ok()) Raise(status);
}

template <typename T>
T Take(Result<T> result) {
  if (!result.ok()) Raise(result.status());
  return std::move(*result);
}

// A tensor whose dtype numpy lacks (bfloat16, float8): its raw bits as an
// array of unsigned integers of the same width, and the dtype's name.
struct TensorBits {
  py::array bits;
  std::string dtype;
};

// ckptdb.Shard and ckptdb.Sharded: this process's shards of a global tensor
// (Tree::Sharded). `data` is a numpy array or TensorBits.
struct PyShard {
  std::vector<int64_t> start;
  py::object data;
  int replica_id = 0;
};
struct PySharded {
  std::string dtype;  // ckptdb's name ("float32", "bfloat16", ...)
  std::vector<int64_t> global_shape;
  std::vector<PyShard> shards;
};

// A Coordinator implemented in Python (ckptdb.Coordinator's subclasses: over
// torch.distributed, or the program's own). Its index, count and whether it
// takes background calls are read once; every call into Python takes the
// GIL (ckptdb calls it from threads that released it), and an exception it
// raises becomes an IOError naming the call.
class PythonCoordinator final : public Coordinator {
 public:
  explicit PythonCoordinator(py::object coordinator)
      : coordinator_(std::move(coordinator)),
        index_(coordinator_.attr("process_index")().cast<int>()),
        count_(coordinator_.attr("process_count")().cast<int>()),
        background_(coordinator_.attr("background_calls_allowed")().cast<bool>()) {}
  ~PythonCoordinator() override {
    py::gil_scoped_acquire gil;
    coordinator_ = py::object();
  }

  int process_index() const override { return index_; }
  int process_count() const override { return count_; }
  bool background_calls_allowed() const override { return background_; }

  Status Barrier() override {
    return Call("barrier", [&] { coordinator_.attr("barrier")(); });
  }
  Status Broadcast(int root, std::string* bytes) override {
    return Call("broadcast", [&] {
      *bytes = coordinator_.attr("broadcast")(root, py::bytes(*bytes)).cast<std::string>();
    });
  }
  Status Gather(int root, const std::string& bytes, std::vector<std::string>* gathered) override {
    return Call("gather", [&] {
      py::object all = coordinator_.attr("gather")(root, py::bytes(bytes));
      gathered->clear();
      if (index_ == root) *gathered = all.cast<std::vector<std::string>>();
    });
  }
  Result<std::shared_ptr<Coordinator>> Subgroup(const std::vector<int>& processes) override {
    std::shared_ptr<Coordinator> group;
    Status status = Call("subgroup", [&] {
      group = std::make_shared<PythonCoordinator>(coordinator_.attr("subgroup")(processes));
    });
    if (!status.ok()) return status;
    return group;
  }

 private:
  template <typename Body>
  Status Call(const char* what, Body&& body) {
    py::gil_scoped_acquire gil;
    try {
      body();
      return Status::OK();
    } catch (py::error_already_set& error) {
      return Status::IOError(std::string("the coordinator's ") + what + " failed: " + error.what());
    } catch (const py::cast_error& error) {
      return Status::IOError(std::string("the coordinator's ") + what +
                             " returned the wrong type: " + error.what());
    }
  }

  py::object coordinator_;
  const int index_;
  const int count_;
  const bool background_;
};

// The numpy dtype of a ckptdb dtype; for those numpy lacks, the unsigned
// integer type of the same width (the raw bits).
py::dtype NumpyDType(DType dtype) {
  switch (dtype) {
    case DType::kBool:
      return py::dtype::of<bool>();
    case DType::kInt8:
      return py::dtype::of<int8_t>();
    case DType::kInt16:
      return py::dtype::of<int16_t>();
    case DType::kInt32:
      return py::dtype::of<int32_t>();
    case DType::kInt64:
      return py::dtype::of<int64_t>();
    case DType::kUInt8:
    case DType::kFloat8E4M3FN:
    case DType::kFloat8E5M2:
      return py::dtype::of<uint8_t>();
    case DType::kUInt16:
    case DType::kBFloat16:
      return py::dtype::of<uint16_t>();
    case DType::kUInt32:
      return py::dtype::of<uint32_t>();
    case DType::kUInt64:
      return py::dtype::of<uint64_t>();
    case DType::kFloat16:
      return py::dtype("float16");
    case DType::kFloat32:
      return py::dtype::of<float>();
    case DType::kFloat64:
      return py::dtype::of<double>();
  }
  return py::dtype::of<uint8_t>();
}

bool NumpyHasDType(DType dtype) {
  return dtype != DType::kBFloat16 && dtype != DType::kFloat8E4M3FN &&
         dtype != DType::kFloat8E5M2;
}

// Where a value of the Python state is: its parent's place and its key (a
// dict's child) or index (a list's). Rendered as a path ("a/0/b") only for an
// error message, so that building a million-leaf state makes no path strings.
struct Place {
  const Place* parent = nullptr;  // none for the root
  std::string_view key;
  size_t index = 0;
  bool in_list = false;
  int shard = -1;  // a shard of a Sharded leaf: its index

  std::string Path() const {
    std::string path = parent == nullptr ? "" : parent->Path();
    if (parent != nullptr) {
      if (!path.empty()) path += '/';
      path += in_list ? std::to_string(index) : std::string(key);
    }
    if (shard >= 0) path += " (shard " + std::to_string(shard) + ")";
    return path;
  }
};

// The ckptdb dtype of a numpy array's elements.
DType FromNumpy(const py::array& array, const Place& place) {
  const py::dtype dtype = array.dtype();
  const char kind = dtype.kind();
  const auto size = static_cast<size_t>(dtype.itemsize());
  if (kind == 'b' && size == 1) return DType::kBool;
  if (kind == 'i') {
    if (size == 1) return DType::kInt8;
    if (size == 2) return DType::kInt16;
    if (size == 4) return DType::kInt32;
    if (size == 8) return DType::kInt64;
  }
  if (kind == 'u') {
    if (size == 1) return DType::kUInt8;
    if (size == 2) return DType::kUInt16;
    if (size == 4) return DType::kUInt32;
    if (size == 8) return DType::kUInt64;
  }
  if (kind == 'f') {
    if (size == 2) return DType::kFloat16;
    if (size == 4) return DType::kFloat32;
    if (size == 8) return DType::kFloat64;
  }
  throw py::type_error("'" + place.Path() + "': numpy dtype " +
                       std::string(py::str(py::handle(dtype))) + " has no ckptdb dtype");
}

std::vector<int64_t> ShapeOf(const py::array& array) {
  return std::vector<int64_t>(array.shape(), array.shape() + array.ndim());
}

// Raised by a build that meets what the Python side converts first (a torch
// tensor or any leaf type this module does not know; a tuple when the tuples
// are to be recorded): the caller converts the state and builds again, so
// that a state of numpy arrays and Python scalars alone is never walked twice.
struct NeedsConversion : std::exception {
  const char* what() const noexcept override { return "the state needs converting first"; }
};

// What a build does with what the Python side converts first.
enum class Unconverted {
  kRefuse,        // converted already: an unknown leaf is a TypeError
  kStop,          // NeedsConversion at an unknown leaf
  kStopAtTuples,  // the same, and at a tuple
};

// Python state -> Tree. Tensors are views of the arrays' memory, writable
// ones when `writable` (a template to restore into), else read-only views
// (C-contiguous copies of arrays that are not, kept alive in `keep`).
class TreeBuilder {
 public:
  TreeBuilder(bool writable, Unconverted unconverted)
      : writable_(writable), unconverted_(unconverted) {}

  Tree Build(py::handle value) { return Build(value, Place{}); }

  // Whether the value built held only dicts and numpy arrays (no list,
  // scalar or other leaf): restored with donation, it then comes back as it
  // is, every array filled in place.
  bool only_dicts_and_arrays() const { return only_dicts_and_arrays_; }

 private:
  Tree Build(py::handle value, const Place& place) {
    // The most common kinds first: a state is mostly dicts and arrays.
    if (PyDict_Check(value.ptr())) {
      Tree map = Tree::Map();
      for (auto [key, child] : py::reinterpret_borrow<py::dict>(value)) {
        if (!PyUnicode_Check(key.ptr())) {
          throw py::type_error("'" + place.Path() + "': dict keys must be str, got " +
                               std::string(py::str(py::type::of(key))));
        }
        const auto name = key.cast<std::string_view>();
        Take(map.Set(name, Build(child, Place{&place, name})));
      }
      return map;
    }
    if (py::isinstance<py::array>(value)) {
      py::array array = py::reinterpret_borrow<py::array>(value);
      return Tree::Leaf(View(array, FromNumpy(array, place), place));
    }
    only_dicts_and_arrays_ = false;
    const bool is_tuple = PyTuple_Check(value.ptr());
    if (is_tuple && unconverted_ == Unconverted::kStopAtTuples) throw NeedsConversion();
    if (is_tuple || PyList_Check(value.ptr())) {
      Tree list = Tree::List();
      size_t index = 0;
      for (py::handle child : value) {
        Take(list.Append(Build(child, Place{&place, {}, index++, true})));
      }
      return list;
    }
    if (PyBool_Check(value.ptr())) return Tree::Bool(value.ptr() == Py_True);
    if (PyLong_Check(value.ptr())) {
      try {
        return Tree::Int(value.cast<int64_t>());
      } catch (const py::cast_error&) {
        throw py::value_error("'" + place.Path() + "': int out of the int64 range");
      }
    }
    if (PyFloat_Check(value.ptr())) return Tree::Float(PyFloat_AS_DOUBLE(value.ptr()));
    if (PyUnicode_Check(value.ptr())) return Tree::String(value.cast<std::string>());
    if (py::isinstance<TensorBits>(value)) {
      const TensorBits& bits = value.cast<const TensorBits&>();
      Result<DType> dtype = DTypeFromName(bits.dtype);
      if (!dtype.ok()) {
        throw py::value_error("'" + place.Path() + "': unknown dtype '" + bits.dtype + "'");
      }
      // The bits' elements must be exactly as wide as the dtype's: the
      // tensor's size comes from one, its shape from the other.
      if (bits.bits.dtype().kind() != 'u' ||
          static_cast<size_t>(bits.bits.itemsize()) != DTypeSize(*dtype)) {
        throw py::value_error("'" + place.Path() + "': the bits of a " + bits.dtype +
                              " tensor must be an array of uint" +
                              std::to_string(8 * DTypeSize(*dtype)) + ", got " +
                              std::string(py::str(py::handle(bits.bits.dtype()))));
      }
      return Tree::Leaf(View(bits.bits, *dtype, place));
    }
    if (py::isinstance<PySharded>(value)) return BuildSharded(value.cast<const PySharded&>(), place);
    if (py::isinstance(value, generic_)) {
      // A numpy scalar (np.float32(0.5)): a 0-d array of its own, found
      // again by its address after a restore (see scalar_of).
      py::array array = py::array::ensure(value);
      scalars_[array.data()] = array;
      return Tree::Leaf(View(array, FromNumpy(array, place), place));
    }
    if (unconverted_ != Unconverted::kRefuse) throw NeedsConversion();
    if (value.is_none()) {
      throw py::type_error("'" + place.Path() + "': None is not a leaf ckptdb stores");
    }
    throw py::type_error("'" + place.Path() + "': a leaf must be a numpy array or an int, " +
                         "float, bool or str, got " + std::string(py::str(py::type::of(value))));
  }

  Tree BuildSharded(const PySharded& sharded, const Place& place) {
    Result<DType> dtype = DTypeFromName(sharded.dtype);
    if (!dtype.ok()) {
      throw py::value_error("'" + place.Path() + "': unknown dtype '" + sharded.dtype + "'");
    }
    ShardedTensor tensor{*dtype, sharded.global_shape, {}};
    for (size_t i = 0; i < sharded.shards.size(); ++i) {
      const PyShard& shard = sharded.shards[i];
      Place shard_place = place;
      shard_place.shard = static_cast<int>(i);
      py::array data;
      if (py::isinstance<TensorBits>(shard.data)) {
        data = shard.data.cast<const TensorBits&>().bits;
      } else if (py::isinstance<py::array>(shard.data)) {
        data = py::reinterpret_borrow<py::array>(shard.data);
        if (NumpyHasDType(*dtype) && FromNumpy(data, shard_place) != *dtype) {
          throw py::value_error("'" + shard_place.Path() + "': a " +
                                std::string(py::str(py::handle(data.dtype()))) +
                                " array in a sharded tensor of " + sharded.dtype);
        }
      } else if (unconverted_ != Unconverted::kRefuse) {
        throw NeedsConversion();
      } else {
        throw py::type_error("'" + shard_place.Path() + "': a shard's data must be a numpy " +
                             "array or TensorBits, got " +
                             std::string(py::str(py::type::of(shard.data))));
      }
      if (static_cast<size_t>(data.itemsize()) != DTypeSize(*dtype)) {
        throw py::value_error("'" + shard_place.Path() + "': elements of " +
                              std::to_string(data.itemsize()) + " bytes in a sharded tensor of " +
                              sharded.dtype);
      }
      tensor.shards.push_back(
          Shard{shard.start, View(data, *dtype, shard_place), shard.replica_id});
    }
    return Take(Tree::Sharded(std::move(tensor)));
  }

  Tensor View(py::array array, DType dtype, const Place& place) {
    const bool contiguous = (array.flags() & py::array::c_style) != 0;
    // ckptdb's bytes are little-endian, this machine's order: numpy's
    // isnative ('=' native, '|' no order, or this machine's own letter).
    const char order = array.dtype().byteorder();
    const bool native = order == '=' || order == '|' ||
                        order == (std::endian::native == std::endian::little ? '<' : '>');
    if (writable_) {
      if (!contiguous || !array.writeable() || !native) {
        throw py::value_error("'" + place.Path() + "': a template to restore into needs writable " +
                              "C-contiguous arrays in the machine's byte order");
      }
      return Take(Tensor::View(dtype, ShapeOf(array), array.mutable_data()));
    }
    if (!native) {
      array = array.attr("astype")(array.dtype().attr("newbyteorder")("="));
      keep_.push_back(array);
    } else if (!contiguous) {
      array = py::array::ensure(array, py::array::c_style);
      keep_.push_back(array);
    }
    return Take(Tensor::ConstView(dtype, ShapeOf(array), array.data()));
  }

  bool writable_;
  Unconverted unconverted_;
  bool only_dicts_and_arrays_ = true;
  std::vector<py::array> keep_;
  std::map<const void*, py::array> scalars_;

 public:
  bool IsNumpyScalar(py::handle value) const { return py::isinstance(value, generic_); }

  // The numpy scalar restored into the 0-d array made for one at `data`.
  py::object scalar_of(const void* data) const {
    auto found = scalars_.find(data);
    if (found == scalars_.end()) return py::none();
    return found->second[py::tuple()];
  }

 private:
  py::object generic_ = py::module_::import("numpy").attr("generic");
};

// A restored tensor as an array that owns it (no copy).
py::object ToPython(Tensor tensor) {
  auto* owned = new Tensor(std::move(tensor));
  py::capsule owner(owned, [](void* p) { delete static_cast<Tensor*>(p); });
  py::array array(NumpyDType(owned->dtype()), owned->shape(), {},
                  const_cast<std::byte*>(owned->data()), owner);
  if (NumpyHasDType(owned->dtype())) return array;
  return py::cast(TensorBits{array, std::string(DTypeName(owned->dtype()))});
}

// Tree -> Python: maps as dicts, lists as lists.
py::object ToPython(Tree& tree) {
  switch (tree.kind()) {
    case Tree::Kind::kMap: {
      py::dict dict;
      tree.ForEachMutableChild([&](std::string_view key, Tree& child) {
        dict[py::str(key.data(), key.size())] = ToPython(child);
      });
      return dict;
    }
    case Tree::Kind::kList: {
      py::list list;
      tree.ForEachMutableChild([&](std::string_view, Tree& child) { list.append(ToPython(child)); });
      return list;
    }
    case Tree::Kind::kTensor:
      return ToPython(std::move(tree.tensor()));
    case Tree::Kind::kInt:
      return py::int_(tree.int_value());
    case Tree::Kind::kFloat:
      return py::float_(tree.float_value());
    case Tree::Kind::kBool:
      return py::bool_(tree.bool_value());
    case Tree::Kind::kString:
      return py::str(tree.string_value());
    case Tree::Kind::kShardedTensor:
      break;  // the Python package builds none, and restores give whole tensors
  }
  return py::none();
}

// The template's structure (dict, list or tuple) with the restored values:
// tensors restored in place are the template's own arrays.
py::object Rebuild(py::handle original, Tree& restored, const TreeBuilder& built) {
  if (PyDict_Check(original.ptr())) {
    // The template's dict itself when every value came back as it was (each
    // array filled in place): a million-leaf state is not copied dict by
    // dict. Copied once, at the first value that did not.
    py::object result = py::reinterpret_borrow<py::object>(original);
    bool copied = false;
    for (auto [key, child] : py::reinterpret_borrow<py::dict>(original)) {
      py::object value = Rebuild(child, *restored.Find(key.cast<std::string_view>()), built);
      if (value.is(child)) continue;
      if (!copied) result = py::reinterpret_steal<py::object>(PyDict_Copy(original.ptr()));
      if (!result) throw py::error_already_set();
      copied = true;
      if (PyDict_SetItem(result.ptr(), key.ptr(), value.ptr()) != 0) throw py::error_already_set();
    }
    return result;
  }
  if (py::isinstance<py::list>(original) || py::isinstance<py::tuple>(original)) {
    py::list list;
    size_t index = 0;
    for (py::handle child : original) list.append(Rebuild(child, restored.element(index++), built));
    if (py::isinstance<py::tuple>(original)) return py::tuple(list);
    return list;
  }
  if (restored.kind() == Tree::Kind::kShardedTensor && py::isinstance<PySharded>(original)) {
    // Donated: the template's own arrays, filled in place; else new ones.
    const PySharded& template_leaf = original.cast<const PySharded&>();
    PySharded result{template_leaf.dtype, template_leaf.global_shape, {}};
    std::vector<Shard>& shards = restored.sharded().shards;
    bool same = true;
    for (size_t i = 0; i < shards.size(); ++i) {
      const PyShard& before = template_leaf.shards[i];
      const void* data = shards[i].data.data();
      const bool in_place = (py::isinstance<TensorBits>(before.data) &&
                             before.data.cast<const TensorBits&>().bits.data() == data) ||
                            (py::isinstance<py::array>(before.data) &&
                             py::reinterpret_borrow<py::array>(before.data).data() == data);
      same = same && in_place;
      result.shards.push_back(PyShard{before.start,
                                      in_place ? before.data : ToPython(std::move(shards[i].data)),
                                      before.replica_id});
    }
    if (same) return py::reinterpret_borrow<py::object>(original);
    return py::cast(std::move(result));
  }
  if (restored.kind() == Tree::Kind::kTensor) {
    const void* data = restored.tensor().data();
    if (py::isinstance<py::array>(original)) {  // the most common leaf first
      if (py::reinterpret_borrow<py::array>(original).data() == data) {
        return py::reinterpret_borrow<py::object>(original);
      }
    } else if (py::isinstance<TensorBits>(original)) {
      if (original.cast<const TensorBits&>().bits.data() == data) {
        return py::reinterpret_borrow<py::object>(original);
      }
    } else if (built.IsNumpyScalar(original)) {
      py::object scalar = built.scalar_of(data);
      if (!scalar.is_none()) return scalar;
      return ToPython(restored)[py::tuple()];  // restored into a new buffer
    }
  }
  return ToPython(restored);
}

CheckpointerOptions OptionsFrom(const py::dict& given) {
  CheckpointerOptions options;
  for (auto [key, value] : given) {
    const std::string name = key.cast<std::string>();
    if (name == "save_interval_steps") {
      options.save_interval_steps = value.cast<int64_t>();
    } else if (name == "max_to_keep") {
      options.max_to_keep =
          value.is_none() ? std::nullopt : std::optional<int64_t>(value.cast<int64_t>());
    } else if (name == "keep_time_interval_seconds") {
      if (!value.is_none()) {
        options.keep_time_interval = std::chrono::seconds(value.cast<int64_t>());
      }
    } else if (name == "keep_period") {
      options.keep_period =
          value.is_none() ? std::nullopt : std::optional<int64_t>(value.cast<int64_t>());
    } else if (name == "save_on_steps") {
      if (!value.is_none()) options.save_on_steps = value.cast<std::vector<int64_t>>();
    } else if (name == "best_metric_path") {
      if (!value.is_none()) options.best_metric_path = value.cast<std::string>();
    } else if (name == "best_mode") {
      const std::string mode = value.cast<std::string>();
      if (mode != "max" && mode != "min") {
        throw py::value_error("best_mode must be 'max' or 'min', got '" + mode + "'");
      }
      options.best_mode = mode == "max" ? BestMode::kMax : BestMode::kMin;
    } else if (name == "fast") {
      options.fast = value.cast<bool>();
    } else if (name == "create") {
      options.create = value.cast<bool>();
    } else if (name == "enable_async_checkpointing") {
      options.enable_async_checkpointing = value.cast<bool>();
    } else if (name == "staging_bytes") {
      options.staging_bytes = value.cast<uint64_t>();
    } else if (name == "worker_threads") {
      options.worker_threads = value.cast<uint32_t>();
    } else if (name == "chunk_size_bytes") {
      options.chunk_size_bytes = value.cast<uint32_t>();
    } else if (name == "max_delta_chain") {
      options.max_delta_chain = value.cast<uint32_t>();
    } else if (name == "owner_only") {
      options.owner_only = value.cast<bool>();
    } else if (name == "coordinator") {
      if (!value.is_none()) {
        options.multiprocessing.coordinator =
            py::isinstance<Coordinator>(value)
                ? value.cast<std::shared_ptr<Coordinator>>()
                : std::make_shared<PythonCoordinator>(py::reinterpret_borrow<py::object>(value));
      }
    } else if (name == "primary_host") {
      options.multiprocessing.primary_host = value.cast<int>();
    } else if (name == "active_processes") {
      if (!value.is_none()) options.multiprocessing.active_processes = value.cast<std::vector<int>>();
    } else if (name == "wait_for_store_seconds") {
      options.wait_for_store =
          std::chrono::milliseconds(static_cast<int64_t>(value.cast<double>() * 1000));
    } else {
      throw py::type_error("unknown option '" + name + "'");
    }
  }
  return options;
}

py::dict LeafMetadataToPython(const LeafMetadata& leaf) {
  py::dict out;
  switch (leaf.kind) {
    case Tree::Kind::kTensor:
      out["dtype"] = std::string(DTypeName(leaf.dtype));
      out["shape"] = py::tuple(py::cast(leaf.shape));
      out["logical_bytes"] = leaf.logical_bytes;
      out["stored_bytes"] = leaf.stored_bytes;
      if (!leaf.saved_boxes.empty()) {
        py::list boxes;
        for (const SavedBox& box : leaf.saved_boxes) {
          boxes.append(py::make_tuple(py::tuple(py::cast(box.start)), py::tuple(py::cast(box.shape))));
        }
        out["boxes"] = boxes;
      }
      break;
    case Tree::Kind::kInt:
      out["value"] = leaf.int_value;
      break;
    case Tree::Kind::kFloat:
      out["value"] = leaf.float_value;
      break;
    case Tree::Kind::kBool:
      out["value"] = leaf.bool_value;
      break;
    case Tree::Kind::kString:
      out["value"] = leaf.string_value;
      break;
    default:
      break;
  }
  return out;
}

// Runs `call` (which must not touch Python objects) with the GIL released;
// the caller raises its error once the GIL is back.
template <typename Call>
auto WithoutGil(Call&& call) {
  py::gil_scoped_release unlocked;
  return call();
}

class PyCheckpointer {
 public:
  PyCheckpointer(const std::string& workdir, const py::dict& options) {
    CheckpointerOptions parsed = OptionsFrom(options);
    checkpointer_ = std::shared_ptr<Checkpointer>(
        Take(WithoutGil([&] { return Checkpointer::Open(workdir, std::move(parsed)); })));
  }

  bool Save(py::handle state, int64_t step, bool force,
            const std::map<std::string, double>& metrics,
            const std::map<std::string, std::string>& user_metadata, bool only_if_due,
            bool converted) {
    TreeBuilder builder(/*writable=*/false,
                        converted ? Unconverted::kRefuse : Unconverted::kStopAtTuples);
    const Tree tree = builder.Build(state);
    SaveOptions options;
    options.force = force;
    options.metrics = metrics;
    options.user_metadata = user_metadata;
    const std::shared_ptr<Checkpointer> checkpointer = get();
    return Take(WithoutGil([&] {
      return only_if_due ? checkpointer->MaybeSave(tree, step, options)
                         : checkpointer->Save(tree, step, options);
    }));
  }

  py::object RestoreTree(int64_t step) {
    const std::shared_ptr<Checkpointer> checkpointer = get();
    Tree restored = Take(WithoutGil([&] { return checkpointer->RestoreTree(step); }));
    return ToPython(restored);
  }

  py::object RestoreInto(py::handle state, int64_t step, bool donate, bool converted) {
    TreeBuilder builder(/*writable=*/donate, converted ? Unconverted::kRefuse : Unconverted::kStop);
    Tree tree = builder.Build(state);
    RestoreOptions options;
    options.donate = donate;
    const std::shared_ptr<Checkpointer> checkpointer = get();
    Check(WithoutGil([&] { return checkpointer->Restore(&tree, step, options); }));
    // Donated arrays are filled in place: a template of dicts and arrays
    // is the result as it is, with nothing to walk again.
    if (donate && builder.only_dicts_and_arrays()) return py::reinterpret_borrow<py::object>(state);
    return Rebuild(state, tree, builder);
  }

  py::dict ItemMetadata(int64_t step) {
    const std::shared_ptr<Checkpointer> checkpointer = get();
    const StepMetadata metadata =
        Take(WithoutGil([&] { return checkpointer->ItemMetadata(step); }));
    py::dict out;
    out["step"] = metadata.step;
    out["commit_time"] =
        std::chrono::duration<double>(metadata.commit_time.time_since_epoch()).count();
    out["metrics"] = metadata.metrics;
    out["user_metadata"] = metadata.user_metadata;
    py::dict leaves;
    for (const LeafMetadata& leaf : metadata.leaves) {
      leaves[py::str(leaf.path)] = LeafMetadataToPython(leaf);
    }
    out["leaves"] = leaves;
    out["logical_bytes"] = metadata.logical_bytes;
    return out;
  }

  // A hold on `step`, which the writer's retention then leaves alone.
  std::unique_ptr<StepHold> Hold(int64_t step) {
    const std::shared_ptr<Checkpointer> checkpointer = get();
    return std::make_unique<StepHold>(
        Take(WithoutGil([&] { return checkpointer->HoldStep(step); })));
  }

  bool ShouldSave(int64_t step) { return get()->ShouldSave(step); }
  std::vector<int64_t> AllSteps() { return get()->AllSteps(); }
  std::optional<int64_t> LatestStep() { return get()->LatestStep(); }

  void Delete(int64_t step) {
    const std::shared_ptr<Checkpointer> checkpointer = get();
    Check(WithoutGil([&] { return checkpointer->Delete(step); }));
  }
  void Reload() {
    const std::shared_ptr<Checkpointer> checkpointer = get();
    Check(WithoutGil([&] { return checkpointer->Reload(); }));
  }
  void WaitUntilFinished() {
    const std::shared_ptr<Checkpointer> checkpointer = get();
    Check(WithoutGil([&] { return checkpointer->WaitUntilFinished(); }));
  }
  void Close() {
    std::shared_ptr<Checkpointer> closing = std::move(checkpointer_);
    if (closing == nullptr) return;
    Check(WithoutGil([&] { return closing->Close(); }));
  }

 private:
  // The open checkpointer; ValueError once closed. Called with the GIL held
  // (it may raise), before any section that releases it.
  std::shared_ptr<Checkpointer> get() {
    if (checkpointer_ == nullptr) {
      PyErr_SetString(PyExc_ValueError, "the checkpointer is closed");
      throw py::error_already_set();
    }
    return checkpointer_;
  }

  // Shared with the calls in progress on other threads (their GIL released),
  // so that close() never frees it under them.
  std::shared_ptr<Checkpointer> checkpointer_;
};

}  // namespace
}  // namespace ckptdb::python

PYBIND11_MODULE(_ckptdb, module) {
  using namespace ckptdb::python;
  module.doc() = "ckptdb's native part; use the ckptdb package";
  corruption_error = PyErr_NewExceptionWithDoc(
      "ckptdb.CorruptionError", "Stored bytes failed a check (digest, size, format).",
      PyExc_OSError, nullptr);
  module.attr("CorruptionError") = py::handle(corruption_error);
  module.attr("LATEST_STEP") = ckptdb::kLatestStep;
  py::register_exception<NeedsConversion>(module, "NeedsConversion");

  py::class_<TensorBits>(module, "TensorBits",
                         "A tensor of a dtype numpy lacks: its raw bits and the dtype's name.")
      .def(py::init<py::array, std::string>(), py::arg("bits"), py::arg("dtype"))
      .def_readonly("bits", &TensorBits::bits)
      .def_readonly("dtype", &TensorBits::dtype)
      .def("__repr__", [](const TensorBits& t) {
        return "TensorBits(dtype='" + t.dtype + "', shape=" +
               std::string(py::str(t.bits.attr("shape"))) + ")";
      });

  py::class_<PyShard>(module, "Shard",
                      "One shard of a global tensor that this process holds: its start "
                      "offsets in the global tensor, its data (a numpy array or TensorBits; "
                      "its shape is the box's) and its replica id (only replica 0 is written).")
      .def(py::init([](std::vector<int64_t> start, py::object data, int replica_id) {
             return PyShard{std::move(start), std::move(data), replica_id};
           }),
           py::arg("start"), py::arg("data"), py::arg("replica_id") = 0)
      .def_readonly("start", &PyShard::start)
      .def_readonly("data", &PyShard::data)
      .def_readonly("replica_id", &PyShard::replica_id);
  py::class_<PySharded>(module, "Sharded",
                        "A global tensor of which this process holds `shards`: its dtype's "
                        "name, its global shape, and the shards (Shard).")
      .def(py::init([](std::string dtype, std::vector<int64_t> global_shape,
                       std::vector<PyShard> shards) {
             return PySharded{std::move(dtype), std::move(global_shape), std::move(shards)};
           }),
           py::arg("dtype"), py::arg("global_shape"), py::arg("shards"))
      .def_readonly("dtype", &PySharded::dtype)
      .def_readonly("global_shape", &PySharded::global_shape)
      .def_readonly("shards", &PySharded::shards);

  // Coordinators made in C++ (ckptdb._mpi's, over MPI), passed through as they are.
  py::class_<ckptdb::Coordinator, std::shared_ptr<ckptdb::Coordinator>>(
      module, "NativeCoordinator", "A coordinator implemented in C++ (MPI).")
      .def("process_index", &ckptdb::Coordinator::process_index)
      .def("process_count", &ckptdb::Coordinator::process_count)
      .def("background_calls_allowed", &ckptdb::Coordinator::background_calls_allowed);

  py::class_<ckptdb::StepHold>(module, "StepHold",
                               "A claim on a step that the writer's retention respects.")
      .def_property_readonly("step", &ckptdb::StepHold::step)
      .def("release", &ckptdb::StepHold::Release);

  py::class_<PyCheckpointer>(module, "Checkpointer")
      .def(py::init<const std::string&, const py::dict&>(), py::arg("workdir"), py::arg("options"))
      .def("save", &PyCheckpointer::Save, py::arg("state"), py::arg("step"), py::arg("force"),
           py::arg("metrics"), py::arg("user_metadata"), py::arg("only_if_due"),
           py::arg("converted"))
      .def("restore_tree", &PyCheckpointer::RestoreTree, py::arg("step"))
      .def("restore_into", &PyCheckpointer::RestoreInto, py::arg("state"), py::arg("step"),
           py::arg("donate"), py::arg("converted"))
      .def("item_metadata", &PyCheckpointer::ItemMetadata, py::arg("step"))
      .def("hold_step", &PyCheckpointer::Hold, py::arg("step"))
      .def("should_save", &PyCheckpointer::ShouldSave, py::arg("step"))
      .def("all_steps", &PyCheckpointer::AllSteps)
      .def("latest_step", &PyCheckpointer::LatestStep)
      .def("delete", &PyCheckpointer::Delete, py::arg("step"))
      .def("reload", &PyCheckpointer::Reload)
      .def("wait_until_finished", &PyCheckpointer::WaitUntilFinished)
      .def("close", &PyCheckpointer::Close);
}
