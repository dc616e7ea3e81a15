#pragma once
// Weights in PyTorch's formats: read a file written by Python's
// `torch.save(model.state_dict(), f)` or `torch.jit.save`, check it against a
// LibTorch module and copy it in; write a module's weights in the format Python's
// `torch.load` reads.
//
// Python's state dict is a collections.OrderedDict, and LibTorch 1.13's
// torch::pickle_load turns an OrderedDict into None and then fails on its items
// ("Expected GenericDict but got None"). So the pickle inside the zip is read here,
// by a small unpickler that knows the opcodes torch.save writes (protocols 2 to 5)
// and the globals a state dict holds: OrderedDict, _rebuild_tensor_v2,
// _rebuild_parameter, _rebuild_from_type_v2 and the typed storages.
//
// Dtypes: a file's tensors keep their dtype when read; load_state_dict converts them
// to the module's dtype and device (float16, bfloat16 or float64 into float32 and
// back), but refuses to mix kinds (floating, integer, bool, complex).

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "diffctl/error.hpp"
#include "diffctl/io/files.hpp"
#include "diffctl/io/sha256.hpp"

namespace diffctl::models {

// Named tensors in file (or module) order, with lookup by name.
using StateDict = torch::OrderedDict<std::string, torch::Tensor>;

struct ReadStateDictOptions {
  // The entry to read when the file holds several state dicts, e.g. "ema" in
  // torch.save({"model": ..., "ema": ...}); for a TorchScript file, a submodule.
  // Empty: the top level.
  std::string key{};
  // Drops a leading "module." from every name (models wrapped in DataParallel).
  bool strip_module_prefix = false;
  // The file's SHA-256 as save_state_dict returned it (64 hex digits); when given,
  // a file with another digest is refused before it is read. Empty: not checked
  // (weights a user brings).
  std::string sha256{};
};

struct LoadStateDictOptions {
  // False tolerates missing and unexpected names (returned in the report); shapes
  // and kinds must match either way.
  bool strict = true;
  // Where the dict came from, for messages ("state dict from <source> ...").
  std::string source{};
  // How many names of each kind of mismatch a message lists.
  std::size_t max_listed = 8;
};

struct LoadStateDictReport {
  std::vector<std::string> missing{};     // in the module, not in the dict
  std::vector<std::string> unexpected{};  // in the dict, not in the module
  std::size_t loaded = 0;
};

namespace detail {

[[noreturn]] inline void weights_error(const std::filesystem::path& path, std::string_view what) {
  throw std::invalid_argument(diffctl::detail::concat("weights file ", path.string(), ": ", what));
}

inline std::string short_message(const c10::Error& error) {
  std::string message = error.what_without_backtrace();
  if (const auto end = message.find('\n'); end != std::string::npos) message.resize(end);
  return message;
}

// A value on the unpickler's stack. Containers share their items, so a memoized
// dict that later SETITEMS fill is the same dict everywhere it is referenced.
struct PickleValue {
  enum class Kind { none, boolean, integer, floating, string, tuple, list, dict, global, storage, tensor, object };
  Kind kind = Kind::none;
  std::int64_t integer = 0;
  double floating = 0.0;
  std::string text;  // a string; a global's or an object's "module.name"; a storage's key
  std::shared_ptr<std::vector<PickleValue>> items;
  std::shared_ptr<std::vector<std::pair<PickleValue, PickleValue>>> entries;
  torch::Tensor tensor;  // a tensor; a storage's whole data, 1-D

  static PickleValue of(Kind kind) {
    PickleValue value;
    value.kind = kind;
    if (kind == Kind::tuple || kind == Kind::list) value.items = std::make_shared<std::vector<PickleValue>>();
    if (kind == Kind::dict) value.entries = std::make_shared<std::vector<std::pair<PickleValue, PickleValue>>>();
    return value;
  }
  static PickleValue of_integer(std::int64_t integer, Kind kind = Kind::integer) {
    PickleValue value = of(kind);
    value.integer = integer;
    return value;
  }
  static PickleValue of_text(std::string text, Kind kind = Kind::string) {
    PickleValue value = of(kind);
    value.text = std::move(text);
    return value;
  }
  static PickleValue of_items(std::vector<PickleValue> items, Kind kind = Kind::tuple) {
    PickleValue value = of(kind);
    *value.items = std::move(items);
    return value;
  }
};

inline const char* kind_name(PickleValue::Kind kind) {
  using K = PickleValue::Kind;
  switch (kind) {
    case K::none:
      return "None";
    case K::boolean:
      return "bool";
    case K::integer:
      return "int";
    case K::floating:
      return "float";
    case K::string:
      return "str";
    case K::tuple:
      return "tuple";
    case K::list:
      return "list";
    case K::dict:
      return "dict";
    case K::global:
      return "global";
    case K::storage:
      return "storage";
    case K::tensor:
      return "tensor";
    case K::object:
      return "object";
  }
  return "value";
}

inline std::optional<c10::ScalarType> storage_dtype(std::string_view type) {
  if (type.starts_with("torch.")) type.remove_prefix(6);
  static const std::array<std::pair<std::string_view, c10::ScalarType>, 13> kTypes{{
      {"FloatStorage", c10::kFloat},
      {"DoubleStorage", c10::kDouble},
      {"HalfStorage", c10::kHalf},
      {"BFloat16Storage", c10::kBFloat16},
      {"LongStorage", c10::kLong},
      {"IntStorage", c10::kInt},
      {"ShortStorage", c10::kShort},
      {"CharStorage", c10::kChar},
      {"ByteStorage", c10::kByte},
      {"BoolStorage", c10::kBool},
      {"ComplexFloatStorage", c10::kComplexFloat},
      {"ComplexDoubleStorage", c10::kComplexDouble},
      {"UntypedStorage", c10::kByte},
  }};
  for (const auto& [name, dtype] : kTypes)
    if (name == type) return dtype;
  return std::nullopt;
}

// Reads the data.pkl of a torch.save zip into PickleValues, tensors included.
class StateDictUnpickler {
 public:
  StateDictUnpickler(caffe2::serialize::PyTorchStreamReader& reader, std::filesystem::path path)
      : reader_(reader), path_(std::move(path)) {}

  PickleValue run(const char* data, std::size_t size) {
    data_ = data;
    size_ = size;
    position_ = 0;
    for (;;) {
      const std::uint8_t op = byte();
      switch (op) {
        case 0x80:
          byte();
          break;  // PROTO
        case 0x95:
          skip(8);
          break;  // FRAME
        case '.':
          return pop();  // STOP
        case 'c': {      // GLOBAL
          std::string module = line();
          push(PickleValue::of_text(module + "." + line(), PickleValue::Kind::global));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          const std::string name = pop_string();
          push(PickleValue::of_text(pop_string() + "." + name, PickleValue::Kind::global));
          break;
        }
        case 'q':
          memo_[byte()] = top();
          break;  // BINPUT
        case 'r':
          memo_[little(4)] = top();
          break;  // LONG_BINPUT
        case 'p':
          memo_[std::stoull(line())] = top();
          break;  // PUT
        case 0x94:
          memo_[memo_.size()] = top();
          break;  // MEMOIZE
        case 'h':
          push(memo(byte()));
          break;  // BINGET
        case 'j':
          push(memo(little(4)));
          break;  // LONG_BINGET
        case 'g':
          push(memo(std::stoull(line())));
          break;  // GET
        case '(':
          marks_.push_back(stack_.size());
          break;  // MARK
        case ')':
          push(PickleValue::of(PickleValue::Kind::tuple));
          break;
        case 't':
          push(PickleValue::of_items(pop_mark()));
          break;  // TUPLE
        case 0x85:
        case 0x86:
        case 0x87: {  // TUPLE1..3
          const std::size_t count = op - 0x84u;
          need(count);
          std::vector<PickleValue> items(stack_.end() - static_cast<std::ptrdiff_t>(count), stack_.end());
          stack_.resize(stack_.size() - count);
          push(PickleValue::of_items(std::move(items)));
          break;
        }
        case ']':
          push(PickleValue::of(PickleValue::Kind::list));
          break;
        case 'l':
          push(PickleValue::of_items(pop_mark(), PickleValue::Kind::list));
          break;
        case 'a': {  // APPEND
          PickleValue item = pop();
          container(PickleValue::Kind::list).items->push_back(std::move(item));
          break;
        }
        case 'e': {  // APPENDS
          auto items = pop_mark();
          auto& list = *container(PickleValue::Kind::list).items;
          list.insert(list.end(), items.begin(), items.end());
          break;
        }
        case '}':
          push(PickleValue::of(PickleValue::Kind::dict));
          break;
        case 'd': {  // DICT
          auto items = pop_mark();
          push(PickleValue::of(PickleValue::Kind::dict));
          set_items(std::move(items));
          break;
        }
        case 's': {  // SETITEM
          PickleValue value = pop();
          PickleValue key = pop();
          set_items({std::move(key), std::move(value)});
          break;
        }
        case 'u':
          set_items(pop_mark());
          break;  // SETITEMS
        case 'N':
          push(PickleValue{});
          break;
        case 0x88:
          push(PickleValue::of_integer(1, PickleValue::Kind::boolean));
          break;
        case 0x89:
          push(PickleValue::of_integer(0, PickleValue::Kind::boolean));
          break;
        case 'J':
          push(PickleValue::of_integer(static_cast<std::int32_t>(static_cast<std::uint32_t>(little(4)))));
          break;
        case 'K':
          push(PickleValue::of_integer(byte()));
          break;
        case 'M':
          push(PickleValue::of_integer(static_cast<std::int64_t>(little(2))));
          break;
        case 0x8a:
          push(PickleValue::of_integer(long_integer(byte())));
          break;  // LONG1
        case 0x8b:
          push(PickleValue::of_integer(long_integer(little(4))));
          break;     // LONG4
        case 'G': {  // BINFLOAT, big-endian
          std::uint64_t bits = 0;
          for (int i = 0; i < 8; ++i) bits = (bits << 8) | byte();
          PickleValue value = PickleValue::of(PickleValue::Kind::floating);
          std::memcpy(&value.floating, &bits, sizeof bits);
          push(std::move(value));
          break;
        }
        case 'X':  // BINUNICODE
        case 'T':  // BINSTRING
        case 'B':  // BINBYTES
          push(PickleValue::of_text(bytes(little(4))));
          break;
        case 0x8c:  // SHORT_BINUNICODE
        case 'U':   // SHORT_BINSTRING
        case 'C':   // SHORT_BINBYTES
          push(PickleValue::of_text(bytes(byte())));
          break;
        case 0x8d:  // BINUNICODE8
        case 0x8e:  // BINBYTES8
          push(PickleValue::of_text(bytes(little(8))));
          break;
        case 'Q':
          push(persistent(pop()));
          break;     // BINPERSID
        case 'R': {  // REDUCE
          PickleValue args = pop();
          PickleValue callable = pop();
          push(reduce(callable, args));
          break;
        }
        case 0x81: {  // NEWOBJ: an object of a class this reader does not know
          pop();
          push(PickleValue::of_text(pop().text, PickleValue::Kind::object));
          break;
        }
        case 'b':
          pop();
          break;  // BUILD: attributes (a state dict's _metadata) are not needed
        case '0':
          pop();
          break;  // POP
        case '1':
          pop_mark();
          break;
        case '2':
          push(top());
          break;  // DUP
        default: {
          std::ostringstream message;
          message << "unsupported pickle opcode 0x" << std::hex << static_cast<int>(op) << std::dec << " at byte "
                  << position_ - 1 << " of data.pkl";
          fail(message.str());
        }
      }
    }
  }

 private:
  [[noreturn]] void fail(std::string_view what) const { weights_error(path_, what); }

  std::uint8_t byte() {
    if (position_ >= size_) fail("data.pkl ends early (truncated file?)");
    return static_cast<std::uint8_t>(data_[position_++]);
  }
  void skip(std::size_t count) {
    if (count > size_ - position_) fail("data.pkl ends early (truncated file?)");
    position_ += count;
  }
  std::string bytes(std::uint64_t count) {
    if (count > size_ - position_) fail("data.pkl ends early (truncated file?)");
    std::string out(data_ + position_, static_cast<std::size_t>(count));
    position_ += static_cast<std::size_t>(count);
    return out;
  }
  std::uint64_t little(int count) {
    std::uint64_t value = 0;
    for (int i = 0; i < count; ++i) value |= static_cast<std::uint64_t>(byte()) << (8 * i);
    return value;
  }
  std::int64_t long_integer(std::uint64_t count) {
    if (count == 0) return 0;
    if (count > 8) fail("an integer in data.pkl does not fit in 64 bits");
    std::uint64_t value = little(static_cast<int>(count));
    if (count < 8 && (value >> (8 * count - 1)) != 0) value |= ~std::uint64_t{0} << (8 * count);
    return static_cast<std::int64_t>(value);
  }
  std::string line() {
    std::string out;
    for (char c = static_cast<char>(byte()); c != '\n'; c = static_cast<char>(byte())) out.push_back(c);
    return out;
  }

  void push(PickleValue value) { stack_.push_back(std::move(value)); }
  void need(std::size_t count) const {
    const std::size_t floor = marks_.empty() ? 0 : marks_.back();
    if (stack_.size() < floor + count) fail("malformed data.pkl (stack underflow)");
  }
  PickleValue& top() {
    need(1);
    return stack_.back();
  }
  PickleValue pop() {
    need(1);
    PickleValue value = std::move(stack_.back());
    stack_.pop_back();
    return value;
  }
  std::vector<PickleValue> pop_mark() {
    if (marks_.empty()) fail("malformed data.pkl (no mark)");
    const std::size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<PickleValue> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }
  std::string pop_string() {
    PickleValue value = pop();
    if (value.kind != PickleValue::Kind::string) fail("malformed data.pkl (expected a name)");
    return value.text;
  }
  PickleValue memo(std::uint64_t index) const {
    const auto found = memo_.find(index);
    if (found == memo_.end()) fail("malformed data.pkl (unknown memo entry)");
    return found->second;
  }
  PickleValue& container(PickleValue::Kind kind) {
    PickleValue& value = top();
    if (value.kind != kind)
      fail(diffctl::detail::concat("malformed data.pkl (expected a ", kind_name(kind), ", found a ",
                                   kind_name(value.kind), ")"));
    return value;
  }
  void set_items(std::vector<PickleValue> items) {
    if (items.size() % 2 != 0) fail("malformed data.pkl (odd number of dict items)");
    auto& entries = *container(PickleValue::Kind::dict).entries;
    for (std::size_t i = 0; i < items.size(); i += 2)
      entries.emplace_back(std::move(items[i]), std::move(items[i + 1]));
  }

  const PickleValue& argument(const PickleValue& args, std::size_t index, PickleValue::Kind kind,
                              std::string_view function) const {
    if (args.kind != PickleValue::Kind::tuple || args.items->size() <= index || (*args.items)[index].kind != kind)
      fail(diffctl::detail::concat("malformed data.pkl (argument ", index, " of ", function, " is not a ",
                                   kind_name(kind), ")"));
    return (*args.items)[index];
  }
  std::vector<std::int64_t> integers(const PickleValue& value, std::string_view function) const {
    std::vector<std::int64_t> out;
    for (const auto& item : *value.items) {
      if (item.kind != PickleValue::Kind::integer)
        fail(diffctl::detail::concat("malformed data.pkl (a size or stride of ", function, " is not an int)"));
      out.push_back(item.integer);
    }
    return out;
  }

  // ('storage', torch.FloatStorage, key, location, numel): the record data/<key>.
  PickleValue persistent(const PickleValue& id) {
    if (id.kind != PickleValue::Kind::tuple || id.items->size() < 5 || (*id.items)[0].text != "storage" ||
        (*id.items)[1].kind != PickleValue::Kind::global || (*id.items)[4].kind != PickleValue::Kind::integer)
      fail("malformed data.pkl (a persistent id that is not a storage)");
    const auto& items = *id.items;
    const std::string key =
        items[2].kind == PickleValue::Kind::integer ? std::to_string(items[2].integer) : items[2].text;
    if (const auto cached = storages_.find(key); cached != storages_.end()) return cached->second;
    const auto dtype = storage_dtype(items[1].text);
    if (!dtype) fail(diffctl::detail::concat("unsupported storage type ", items[1].text));
    const std::int64_t numel = items[4].integer;
    if (numel < 0) fail("malformed data.pkl (negative storage size)");
    const std::string record = "data/" + key;
    if (!reader_.hasRecord(record)) fail(diffctl::detail::concat("record ", record, " is missing"));
    auto [data, size] = reader_.getRecord(record);
    const std::size_t needed = static_cast<std::size_t>(numel) * c10::elementSize(*dtype);
    if (size < needed)
      fail(diffctl::detail::concat("record ", record, " holds ", size, " bytes, its storage needs ", needed));
    PickleValue storage = PickleValue::of_text(key, PickleValue::Kind::storage);
    storage.tensor = torch::empty({numel}, torch::TensorOptions().dtype(*dtype));
    if (needed > 0) std::memcpy(storage.tensor.data_ptr(), data.get(), needed);
    storages_.emplace(key, storage);
    return storage;
  }

  PickleValue reduce(const PickleValue& callable, const PickleValue& args) {
    if (callable.kind != PickleValue::Kind::global) return PickleValue::of_text("?", PickleValue::Kind::object);
    const std::string& name = callable.text;
    if (name == "collections.OrderedDict") {
      PickleValue dict = PickleValue::of(PickleValue::Kind::dict);
      if (args.kind == PickleValue::Kind::tuple && !args.items->empty()) {
        const PickleValue& pairs = (*args.items)[0];
        if (pairs.items)
          for (const auto& pair : *pairs.items)
            if (pair.items && pair.items->size() == 2) dict.entries->emplace_back((*pair.items)[0], (*pair.items)[1]);
      }
      return dict;
    }
    if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") {
      const auto& storage = argument(args, 0, PickleValue::Kind::storage, name);
      const std::int64_t offset = argument(args, 1, PickleValue::Kind::integer, name).integer;
      const auto sizes = integers(argument(args, 2, PickleValue::Kind::tuple, name), name);
      const auto strides = integers(argument(args, 3, PickleValue::Kind::tuple, name), name);
      if (sizes.size() != strides.size()) fail("malformed data.pkl (sizes and strides differ in length)");
      std::int64_t last = offset;
      bool empty = false;
      for (std::size_t i = 0; i < sizes.size(); ++i) {
        if (sizes[i] < 0 || strides[i] < 0) fail("malformed data.pkl (negative size or stride)");
        if (sizes[i] == 0) empty = true;
        last += (sizes[i] - 1) * strides[i];
      }
      if (offset < 0 || (!empty && last >= storage.tensor.numel()))
        fail(diffctl::detail::concat("a tensor reaches past the end of storage ", storage.text));
      PickleValue tensor = PickleValue::of(PickleValue::Kind::tensor);
      tensor.tensor = empty ? torch::empty(sizes, storage.tensor.options())
                            : storage.tensor.as_strided(sizes, strides, offset).contiguous();
      return tensor;
    }
    if (name == "torch._utils._rebuild_parameter" || name == "torch._utils._rebuild_parameter_with_state")
      return argument(args, 0, PickleValue::Kind::tensor, name);
    if (name == "torch._tensor._rebuild_from_type_v2") {
      const auto& function = argument(args, 0, PickleValue::Kind::global, name);
      return reduce(function, argument(args, 2, PickleValue::Kind::tuple, name));
    }
    if (name == "torch.jit._pickle.restore_type_tag" || name == "torch.jit._pickle.build_intlist" ||
        name == "torch.jit._pickle.build_tensorlist" || name == "torch.jit._pickle.build_doublelist" ||
        name == "torch.jit._pickle.build_boollist") {
      if (args.kind == PickleValue::Kind::tuple && !args.items->empty()) return (*args.items)[0];
    }
    return PickleValue::of_text(name, PickleValue::Kind::object);
  }

  caffe2::serialize::PyTorchStreamReader& reader_;
  std::filesystem::path path_;
  const char* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t position_ = 0;
  std::vector<PickleValue> stack_;
  std::vector<std::size_t> marks_;
  std::map<std::uint64_t, PickleValue> memo_;
  std::map<std::string, PickleValue> storages_;
};

inline void add_entry(StateDict& dict, const std::string& name, torch::Tensor tensor) {
  if (auto* existing = dict.find(name)) {
    *existing = std::move(tensor);  // a later entry wins, as in a Python dict
    return;
  }
  dict.insert(name, std::move(tensor));
}

inline std::string list_names(const std::vector<std::string>& names, std::size_t max_listed = 8) {
  std::string out;
  for (std::size_t i = 0; i < names.size() && i < max_listed; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > max_listed) out += diffctl::detail::concat(", ... ", names.size() - max_listed, " more");
  return out;
}

inline StateDict read_pickled_state_dict(caffe2::serialize::PyTorchStreamReader& reader,
                                         const std::filesystem::path& path, const std::string& key) {
  if (reader.hasRecord("byteorder")) {
    auto [data, size] = reader.getRecord("byteorder");
    if (std::string(static_cast<const char*>(data.get()), size) != "little")
      weights_error(path, "tensors stored big-endian are not supported");
  }
  auto [data, size] = reader.getRecord("data.pkl");
  StateDictUnpickler unpickler(reader, path);
  const PickleValue root = unpickler.run(static_cast<const char*>(data.get()), size);
  if (root.kind != PickleValue::Kind::dict)
    weights_error(path, diffctl::detail::concat("holds a ", kind_name(root.kind), ", not a dict of tensors"));

  std::vector<std::string> nested;  // keys whose values are dicts, for messages
  for (const auto& [name, value] : *root.entries)
    if (name.kind == PickleValue::Kind::string && value.kind == PickleValue::Kind::dict) nested.push_back(name.text);

  const PickleValue* chosen = &root;
  if (!key.empty()) {
    chosen = nullptr;
    for (const auto& [name, value] : *root.entries)
      if (name.kind == PickleValue::Kind::string && name.text == key) chosen = &value;
    if (!chosen)
      weights_error(path, diffctl::detail::concat("has no entry \"", key, "\"",
                                                  nested.empty() ? "" : " (dict entries: " + list_names(nested) + ")"));
    if (chosen->kind != PickleValue::Kind::dict)
      weights_error(path, diffctl::detail::concat("entry \"", key, "\" is a ", kind_name(chosen->kind),
                                                  ", not a dict of tensors"));
  }
  StateDict dict("tensor");
  for (const auto& [name, value] : *chosen->entries)
    if (name.kind == PickleValue::Kind::string && value.kind == PickleValue::Kind::tensor)
      add_entry(dict, name.text, value.tensor);
  if (dict.is_empty() && key.empty() && !nested.empty())
    weights_error(
        path, "holds no tensors at the top level; choose one of its dict entries with a key: " + list_names(nested));
  return dict;
}

inline StateDict read_torchscript_state_dict(const std::filesystem::path& path, const std::string& key) {
  torch::jit::Module module;
  try {
    module = torch::jit::load(path.string(), torch::Device(torch::kCPU));
  } catch (const c10::Error& error) {
    weights_error(path, "cannot load it as TorchScript: " + short_message(error));
  }
  const std::string prefix = key.empty() ? "" : key + ".";
  StateDict dict("tensor");
  auto add = [&](const std::string& name, const torch::Tensor& tensor) {
    if (name.compare(0, prefix.size(), prefix) == 0) add_entry(dict, name.substr(prefix.size()), tensor.detach());
  };
  for (const auto& parameter : module.named_parameters(/*recurse=*/true)) add(parameter.name, parameter.value);
  for (const auto& buffer : module.named_buffers(/*recurse=*/true)) add(buffer.name, buffer.value);
  if (!key.empty() && dict.is_empty())
    weights_error(path, diffctl::detail::concat("has no submodule \"", key, "\" with tensors"));
  return dict;
}

enum class TensorKind { floating, complex, integer, boolean };

inline TensorKind tensor_kind(c10::ScalarType dtype) {
  if (c10::isComplexType(dtype)) return TensorKind::complex;
  if (c10::isFloatingType(dtype)) return TensorKind::floating;
  if (dtype == c10::kBool) return TensorKind::boolean;
  return TensorKind::integer;
}

inline std::string describe_shape(const torch::Tensor& tensor, bool with_dtype) {
  std::ostringstream out;
  if (with_dtype) out << tensor.scalar_type() << ' ';
  out << tensor.sizes();
  return out.str();
}

// Little-endian integers of a byte buffer, 0 past its end.
inline std::uint64_t zip_int(std::string_view bytes, std::size_t at, std::size_t width) {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < width && at + i < bytes.size(); ++i)
    value |= std::uint64_t(static_cast<unsigned char>(bytes[at + i])) << (8 * i);
  return value;
}

// Checks the sizes the zip's central directory declares before LibTorch's reader
// sees the file: that reader allocates each record's declared size at once, so a
// few hundred bytes claiming a 4 GB record (found by fuzzing) make it allocate
// 4 GB. Every record must fit in the file (stored records exactly, deflated ones
// within deflate's largest ratio).
inline void check_zip_sizes(const std::filesystem::path& path) {
  const std::uint64_t file_size = std::filesystem::file_size(path);
  std::ifstream in(path, std::ios::binary);
  const auto read_at = [&](std::uint64_t offset, std::uint64_t length) {
    std::string bytes(static_cast<std::size_t>(length), '\0');
    in.seekg(static_cast<std::streamoff>(offset));
    in.read(bytes.data(), static_cast<std::streamsize>(length));
    bytes.resize(static_cast<std::size_t>(in.gcount()));
    in.clear();
    return bytes;
  };
  const std::uint64_t tail_size = std::min<std::uint64_t>(file_size, 65535 + 22);
  const std::string tail = read_at(file_size - tail_size, tail_size);
  const std::size_t eocd = tail.rfind("PK\x05\x06");
  if (eocd == std::string::npos || tail.size() - eocd < 22)
    weights_error(path, "is not a whole zip archive (no end of its central directory; truncated?)");
  std::uint64_t entries = zip_int(tail, eocd + 10, 2), cd_size = zip_int(tail, eocd + 12, 4),
                cd_offset = zip_int(tail, eocd + 16, 4);
  if (entries == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF) {  // zip64
    if (eocd < 20 || tail.compare(eocd - 20, 4, "PK\x06\x07") != 0)
      weights_error(path, "is a zip64 archive without its locator (corrupt)");
    const std::uint64_t record = zip_int(tail, eocd - 20 + 8, 8);
    const std::string zip64 = record + 56 <= file_size ? read_at(record, 56) : std::string();
    if (zip64.size() < 56 || zip64.compare(0, 4, "PK\x06\x06") != 0)
      weights_error(path, "is a zip64 archive with a bad end record (corrupt)");
    entries = zip_int(zip64, 32, 8);
    cd_size = zip_int(zip64, 40, 8);
    cd_offset = zip_int(zip64, 48, 8);
  }
  if (cd_offset > file_size || cd_size > file_size - cd_offset)
    weights_error(path, "has a central directory past its end (truncated or corrupt)");
  const std::string cd = read_at(cd_offset, cd_size);
  std::size_t at = 0;
  for (std::uint64_t i = 0; i < entries; ++i) {
    if (cd.size() < at + 46 || cd.compare(at, 4, "PK\x01\x02") != 0)
      weights_error(path, "has a corrupt central directory (entry " + std::to_string(i) + ")");
    const std::uint64_t method = zip_int(cd, at + 10, 2);
    std::uint64_t compressed = zip_int(cd, at + 20, 4), size = zip_int(cd, at + 24, 4);
    const std::size_t name_length = zip_int(cd, at + 28, 2), extra_length = zip_int(cd, at + 30, 2),
                      comment_length = zip_int(cd, at + 32, 2);
    const std::string name = cd.substr(std::min(cd.size(), at + 46), name_length);
    // Zip64 sizes live in the extra field 0x0001: the uncompressed size first, then
    // the compressed one, each only when its 32-bit field is 0xFFFFFFFF.
    for (std::size_t extra = at + 46 + name_length; extra + 4 <= at + 46 + name_length + extra_length;) {
      const std::uint64_t id = zip_int(cd, extra, 2), length = zip_int(cd, extra + 2, 2);
      if (id == 1) {
        std::size_t field = extra + 4;
        if (size == 0xFFFFFFFF) size = zip_int(cd, std::exchange(field, field + 8), 8);
        if (compressed == 0xFFFFFFFF) compressed = zip_int(cd, field, 8);
      }
      extra += 4 + length;
    }
    const bool fits = compressed <= file_size && (method == 0 ? size == compressed : size / 1032 <= compressed + 64);
    if (!fits)
      weights_error(path, "declares a record " + name + " of " + std::to_string(size) + " bytes (" +
                              std::to_string(compressed) + " stored) in a file of " + std::to_string(file_size) +
                              " (corrupt)");
    at += 46 + name_length + extra_length + comment_length;
  }
}

}  // namespace detail

// Reads the tensors of a file written by Python's torch.save (the zip format,
// PyTorch >= 1.6; a state dict or a dict holding state dicts, see options.key), by
// torch::pickle_save or save_state_dict, or by torch.jit.save (its parameters and
// buffers, with dotted names). Tensors come back on the CPU in the file's dtypes.
inline StateDict read_state_dict(const std::filesystem::path& path, const ReadStateDictOptions& options = {}) {
  require(std::filesystem::is_regular_file(path), "weights file ", path.string(), ": no such file");
  if (!options.sha256.empty()) {
    const std::string found = io::sha256_file(path);
    require(found == options.sha256, "weights file ", path.string(), ": SHA-256 ", found, " where ", options.sha256,
            " was recorded when it was written (the file is corrupt or was replaced)");
  }
  std::array<char, 4> magic{};
  {
    std::ifstream in(path, std::ios::binary);
    in.read(magic.data(), magic.size());
  }
  if (std::memcmp(magic.data(), "PK\x03\x04", 4) != 0) {
    if (static_cast<unsigned char>(magic[0]) == 0x80)
      detail::weights_error(path,
                            "is in the legacy torch.save format (before PyTorch 1.6); re-save it with "
                            "torch.save(..., _use_new_zipfile_serialization=True)");
    detail::weights_error(path, "is neither a torch.save file nor a TorchScript file (not a zip archive)");
  }
  detail::check_zip_sizes(path);
  StateDict dict("tensor");
  try {
    caffe2::serialize::PyTorchStreamReader reader(path.string());
    if (reader.hasRecord("constants.pkl")) {
      dict = detail::read_torchscript_state_dict(path, options.key);
    } else if (reader.hasRecord("data.pkl")) {
      dict = detail::read_pickled_state_dict(reader, path, options.key);
    } else {
      detail::weights_error(path,
                            "is a zip archive but neither a torch.save file nor a TorchScript file "
                            "(no data.pkl record)");
    }
  } catch (const c10::Error& error) {
    detail::weights_error(path, "cannot be read (truncated or not a PyTorch file): " + detail::short_message(error));
  }
  if (!options.strip_module_prefix) return dict;
  constexpr std::string_view kPrefix = "module.";
  StateDict stripped("tensor");
  for (const auto& item : dict) {
    const std::string& name = item.key();
    const std::string bare = name.starts_with(kPrefix) ? name.substr(kPrefix.size()) : name;
    require(!stripped.contains(bare), "weights file ", path.string(), ": both ", name, " and ", bare,
            " are present, so the \"module.\" prefix cannot be stripped");
    stripped.insert(bare, item.value());
  }
  return stripped;
}

// The same, reading the dict stored under `key` (e.g. "ema").
inline StateDict read_state_dict(const std::filesystem::path& path, std::string key) {
  ReadStateDictOptions options;
  options.key = std::move(key);
  return read_state_dict(path, options);
}

// A module's parameters and buffers by their dotted names, detached.
inline StateDict state_dict(const torch::nn::Module& module) {
  StateDict dict("tensor");
  for (const auto& item : module.named_parameters(/*recurse=*/true))
    if (item.value().defined()) dict.insert(item.key(), item.value().detach());
  for (const auto& item : module.named_buffers(/*recurse=*/true))
    if (item.value().defined()) dict.insert(item.key(), item.value().detach());
  return dict;
}

// Checks `dict` against the module's parameters and buffers and throws one
// std::invalid_argument listing every missing, unexpected and mismatched name; does
// not change the module.
inline LoadStateDictReport check_state_dict(const torch::nn::Module& module, const StateDict& dict,
                                            const LoadStateDictOptions& options = {}) {
  const StateDict target = state_dict(module);
  LoadStateDictReport report;
  std::vector<std::string> mismatched;
  for (const auto& item : target) {
    const auto* found = dict.find(item.key());
    if (!found) {
      report.missing.push_back(item.key());
      continue;
    }
    const bool kinds_differ =
        detail::tensor_kind(found->scalar_type()) != detail::tensor_kind(item.value().scalar_type());
    if (kinds_differ || !found->sizes().equals(item.value().sizes()))
      mismatched.push_back(diffctl::detail::concat(item.key(), ": file ", detail::describe_shape(*found, kinds_differ),
                                                   " vs model ", detail::describe_shape(item.value(), kinds_differ)));
  }
  for (const auto& item : dict)
    if (!target.contains(item.key())) report.unexpected.push_back(item.key());
  report.loaded = target.size() - report.missing.size();

  const bool missing = options.strict && !report.missing.empty();
  const bool unexpected = options.strict && !report.unexpected.empty();
  if (!missing && !unexpected && mismatched.empty()) return report;
  std::vector<std::string> parts;
  if (missing)
    parts.push_back(diffctl::detail::concat("missing ", report.missing.size(), " (",
                                            detail::list_names(report.missing, options.max_listed), ")"));
  if (unexpected)
    parts.push_back(diffctl::detail::concat("unexpected ", report.unexpected.size(), " (",
                                            detail::list_names(report.unexpected, options.max_listed), ")"));
  if (!mismatched.empty())
    parts.push_back(diffctl::detail::concat("mismatched ", mismatched.size(), " (",
                                            detail::list_names(mismatched, options.max_listed), ")"));
  std::string message = "state dict";
  if (!options.source.empty()) message += " from " + options.source;
  message += " does not match the model: ";
  for (std::size_t i = 0; i < parts.size(); ++i) message += (i ? ", " : "") + parts[i];
  if (unexpected && std::all_of(report.unexpected.begin(), report.unexpected.end(),
                                [](const std::string& name) { return name.starts_with("module."); }))
    message += " (the names start with \"module.\": read them with strip_module_prefix)";
  throw std::invalid_argument(message);
}

// Copies `dict` into the module's parameters and buffers after check_state_dict,
// converting each tensor to the dtype and device of the one it replaces.
inline LoadStateDictReport load_state_dict(torch::nn::Module& module, const StateDict& dict,
                                           const LoadStateDictOptions& options = {}) {
  LoadStateDictReport report = check_state_dict(module, dict, options);
  torch::NoGradGuard no_grad;
  auto copy = [&](const std::string& name, torch::Tensor& target) {
    if (!target.defined()) return;
    if (const auto* found = dict.find(name)) target.copy_(*found);
  };
  for (auto& item : module.named_parameters(/*recurse=*/true)) copy(item.key(), item.value());
  for (auto& item : module.named_buffers(/*recurse=*/true)) copy(item.key(), item.value());
  return report;
}

// read_state_dict then load_state_dict, with the file named in messages.
inline LoadStateDictReport load_weights(torch::nn::Module& module, const std::filesystem::path& path,
                                        const ReadStateDictOptions& read_options = {},
                                        LoadStateDictOptions load_options = {}) {
  if (load_options.source.empty()) load_options.source = path.string();
  return load_state_dict(module, read_state_dict(path, read_options), load_options);
}

// Writes `dict` as torch.save would write a dict of tensors (a zip holding
// archive/data.pkl, archive/data/N and archive/version), so Python's torch.load
// reads it; tensors are stored on the CPU. The file appears whole or not at all.
// Returns its SHA-256, to record beside it (ReadStateDictOptions::sha256).
inline std::string save_state_dict(const StateDict& dict, const std::filesystem::path& path) {
  c10::Dict<std::string, at::Tensor> pickled;
  for (const auto& item : dict) pickled.insert(item.key(), item.value().detach().to(torch::kCPU).contiguous());
  const std::vector<char> bytes = torch::pickle_save(c10::IValue(pickled));
  io::write_atomically(path, [&](const std::filesystem::path& partial) {
    std::ofstream out(partial, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    return static_cast<bool>(out);
  });
  return io::sha256(std::string_view(bytes.data(), bytes.size()));
}

inline std::string save_state_dict(const torch::nn::Module& module, const std::filesystem::path& path) {
  return save_state_dict(state_dict(module), path);
}

}  // namespace diffctl::models
