#include "diffctl/models/state_dict.hpp"
#include "support/temp_dir.hpp"

#include <caffe2/serialize/inline_container.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

using diffctl::testing::read_bytes;
using diffctl::testing::TempDir;
using diffctl::testing::write_bytes;

namespace {

using Catch::Matchers::Contains;
namespace fs = std::filesystem;
namespace models = diffctl::models;

// Conv2d + BatchNorm2d in a Sequential, then a Linear: nested, dotted names and
// buffers (running_mean, running_var, num_batches_tracked).
struct NetImpl : torch::nn::Module {
  explicit NetImpl(int64_t out = 3) {
    features = register_module("features",
                               torch::nn::Sequential(torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 4, 3).padding(1)),
                                                     torch::nn::BatchNorm2d(4)));
    head = register_module("head", torch::nn::Linear(4 * 5 * 5, out));
  }
  torch::Tensor forward(const torch::Tensor& x) { return head(torch::relu(features->forward(x)).flatten(1)); }
  torch::nn::Sequential features{nullptr};
  torch::nn::Linear head{nullptr};
};
TORCH_MODULE(Net);

// A trained-looking net: its batch-norm statistics moved away from the defaults.
Net make_net(std::uint64_t seed) {
  torch::manual_seed(seed);
  Net net;
  net->train();
  for (int i = 0; i < 3; ++i) net->forward(torch::randn({8, 1, 5, 5}));
  net->eval();
  return net;
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

// data.pkl of Python's torch.save(sd) for
//   sd = OrderedDict(fc.weight=[2,3] float, fc.bias=[2] float,
//                    fc.weight_t=fc.weight.t() (same storage), bn.num_batches_tracked=long scalar)
// with sd._metadata = OrderedDict({"": {"version": 1}, "fc": {"version": 1}}), as
// torch.save pickles it (protocol 2, the default): OrderedDict via REDUCE,
// _rebuild_tensor_v2 with a ('storage', torch.FloatStorage, key, 'cpu', numel)
// persistent id, the metadata through BUILD. Made by Python's pickle with the
// torch globals stubbed out, since this machine has no PyTorch.
const std::string kPythonStateDictProtocol2 = from_hex(
    "800263636f6c6c656374696f6e730a4f726465726564446963740a71002952710128580900000066632e7765696768"
    "74"
    "710263746f7263682e5f7574696c730a5f72656275696c645f74656e736f725f76320a71032828580700000073746f"
    "72"
    "616765710463746f7263680a466c6f617453746f726167650a71055801000000307106580300000063707571074b06"
    "74"
    "7108514b004b024b038671094b034b0186710a8968002952710b74710c52710d580700000066632e62696173710e68"
    "03"
    "282868046805580100000031710f68074b02747110514b004b028571114b0185711289680029527113747114527115"
    "58"
    "0b00000066632e7765696768745f7471166803282868046805680668074b06747117514b004b034b028671184b014b"
    "03"
    "8671198968002952711a74711b52711c5816000000626e2e6e756d5f626174636865735f747261636b6564711d6803"
    "28"
    "28680463746f7263680a4c6f6e6753746f726167650a711e580100000032711f68074b01747120514b002929896800"
    "29"
    "527121747122527123757d712458090000005f6d65746164617461712568002952712628580000000071277d712858"
    "07"
    "00000076657273696f6e71294b017358020000006663712a7d712b68294b01737573622e");

// The same dict pickled with protocol 4 (torch.save(..., pickle_protocol=4)):
// FRAME, STACK_GLOBAL, SHORT_BINUNICODE, MEMOIZE.
const std::string kPythonStateDictProtocol4 = from_hex(
    "80049589010000000000008c0b636f6c6c656374696f6e73948c0b4f72646572656444696374949394295294288c09"
    "66"
    "632e776569676874948c0c746f7263682e5f7574696c73948c125f72656275696c645f74656e736f725f7632949394"
    "28"
    "288c0773746f72616765948c05746f726368948c0c466c6f617453746f726167659493948c0130948c03637075944b"
    "06"
    "7494514b004b024b0386944b034b018694896802295294749452948c0766632e6269617394680728286808680b8c01"
    "31"
    "94680d4b027494514b004b0285944b018594896802295294749452948c0b66632e7765696768745f74946807282868"
    "08"
    "680b680c680d4b067494514b004b034b0286944b014b038694896802295294749452948c16626e2e6e756d5f626174"
    "63"
    "6865735f747261636b65649468072828680868098c0b4c6f6e6753746f726167659493948c013294680d4b01749451"
    "4b"
    "00292989680229529474945294757d948c095f6d65746164617461946802295294288c00947d948c0776657273696f"
    "6e"
    "944b01738c026663947d9468304b01737573622e");

// A zip laid out as torch.save lays it out: <stem>/data.pkl, <stem>/data/<key>, <stem>/version.
void write_python_file(const fs::path& path, const std::string& pickle) {
  caffe2::serialize::PyTorchStreamWriter writer(path.string());
  writer.writeRecord("data.pkl", pickle.data(), pickle.size());
  const std::vector<float> weight{1, 2, 3, 4, 5, 6};
  const std::vector<float> bias{7, 8};
  const std::vector<std::int64_t> batches{42};
  writer.writeRecord("data/0", weight.data(), weight.size() * sizeof(float));
  writer.writeRecord("data/1", bias.data(), bias.size() * sizeof(float));
  writer.writeRecord("data/2", batches.data(), batches.size() * sizeof(std::int64_t));
  writer.writeEndOfFile();
}

std::vector<std::string> names_of(const models::StateDict& dict) { return dict.keys(); }

}  // namespace

TEST_CASE("save_state_dict and read_state_dict round-trip a module", "[weights]") {
  TempDir dir;
  const fs::path file = dir.path() / "net.pt";
  Net net = make_net(1);
  models::save_state_dict(*net, file);
  CHECK_FALSE(fs::exists(file.string() + ".partial"));

  const models::StateDict expected = models::state_dict(*net);
  CHECK(names_of(expected) == std::vector<std::string>{"features.0.weight", "features.0.bias", "features.1.weight",
                                                       "features.1.bias", "head.weight", "head.bias",
                                                       "features.1.running_mean", "features.1.running_var",
                                                       "features.1.num_batches_tracked"});
  const models::StateDict read = models::read_state_dict(file);
  REQUIRE(names_of(read) == names_of(expected));
  for (const auto& item : expected) {
    const torch::Tensor& got = read[item.key()];
    INFO(item.key());
    CHECK(got.scalar_type() == item.value().scalar_type());
    CHECK(torch::equal(got, item.value()));
  }
  CHECK(read["features.1.num_batches_tracked"].item<std::int64_t>() == 3);

  Net fresh = make_net(2);
  const torch::Tensor x = torch::randn({2, 1, 5, 5});
  CHECK_FALSE(torch::equal(fresh->forward(x), net->forward(x)));
  const auto report = models::load_weights(*fresh, file);
  CHECK(report.loaded == 9);
  CHECK(report.missing.empty());
  CHECK(report.unexpected.empty());
  CHECK(torch::equal(fresh->forward(x), net->forward(x)));
  CHECK(fresh->head->weight.requires_grad());
}

TEST_CASE("SHA-256 gives the digests of FIPS 180-4's examples", "[weights]") {
  using diffctl::io::sha256;
  CHECK(sha256("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(sha256(std::string(1000000, 'a')) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // Lengths around the padding boundary (55, 56 and 64 bytes) fed in pieces.
  for (const std::size_t n : {55u, 56u, 63u, 64u, 65u}) {
    const std::string text(n, 'x');
    diffctl::io::Sha256 pieces;
    pieces.update(text.substr(0, 7)).update(text.substr(7));
    CHECK(pieces.hex() == sha256(text));
  }
}

TEST_CASE("weights written with their SHA-256 are refused once a byte changes", "[weights]") {
  TempDir dir;
  const fs::path file = dir.path() / "net.pt";
  const std::string digest = models::save_state_dict(*make_net(1), file);
  CHECK(digest == diffctl::io::sha256_file(file));
  models::ReadStateDictOptions checked;
  checked.sha256 = digest;
  CHECK(models::read_state_dict(file, checked).size() == 9);

  std::string bytes = read_bytes(file);
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x01);
  write_bytes(file, bytes);
  Net net = make_net(2);
  CHECK_THROWS_WITH(models::load_weights(*net, file, checked),
                    Contains(file.string()) && Contains("SHA-256") && Contains(digest) && Contains("corrupt"));
}

TEST_CASE("a zip whose records claim more bytes than the file holds is refused before LibTorch reads it", "[weights]") {
  TempDir dir;
  const fs::path file = dir.path() / "net.pt";
  models::save_state_dict(*make_net(1), file);
  std::string bytes = read_bytes(file);
  // The first central-directory entry's uncompressed size: 4 GB - 16 (LibTorch
  // would allocate that much to read the record).
  const std::size_t entry = bytes.find("PK\x01\x02");
  REQUIRE(entry != std::string::npos);
  for (int i = 0; i < 4; ++i) bytes[entry + 24 + i] = static_cast<char>(i == 0 ? 0xF0 : 0xFF);
  write_bytes(file, bytes);
  CHECK_THROWS_WITH(models::read_state_dict(file),
                    Contains(file.string()) && Contains("4294967280 bytes") && Contains("corrupt"));
  // Cut before the end of the central directory.
  write_bytes(file, bytes.substr(0, bytes.size() - 30));
  CHECK_THROWS_WITH(models::read_state_dict(file), Contains("not a whole zip archive"));
}

TEST_CASE("save_state_dict writes the zip layout Python's torch.load reads", "[weights]") {
  TempDir dir;
  const fs::path file = dir.path() / "net.pt";
  models::save_state_dict(*make_net(1), file);

  caffe2::serialize::PyTorchStreamReader reader(file.string());
  const auto records = reader.getAllRecords();
  auto has = [&](const std::string& name) { return std::find(records.begin(), records.end(), name) != records.end(); };
  CHECK(has("data.pkl"));
  CHECK(has("version"));
  CHECK(has("data/0"));
  CHECK(has("data/8"));  // one storage per tensor
  CHECK_FALSE(has("constants.pkl"));
  // Every record sits under one top-level folder, "<name>/data.pkl" and so on.
  const std::string text = read_bytes(file);
  CHECK(text.find("/data.pkl") != std::string::npos);
  CHECK(text.find("/version") != std::string::npos);
  CHECK(text.find("/data/0") != std::string::npos);
  // A plain pickle of protocol 2 whose tensors torch.load rebuilds with _rebuild_tensor_v2.
  auto [data, size] = reader.getRecord("data.pkl");
  const std::string pickle(static_cast<const char*>(data.get()), size);
  CHECK(pickle.substr(0, 2) == std::string("\x80\x02", 2));
  CHECK(pickle.find("torch._utils\n_rebuild_tensor_v2") != std::string::npos);
  CHECK(pickle.find("FloatStorage") != std::string::npos);
}

TEST_CASE("read_state_dict reads Python's OrderedDict state dicts", "[weights]") {
  TempDir dir;
  const auto protocol = GENERATE(2, 4);
  const fs::path file = dir.path() / ("python_" + std::to_string(protocol) + ".pt");
  write_python_file(file, protocol == 2 ? kPythonStateDictProtocol2 : kPythonStateDictProtocol4);

  const models::StateDict dict = models::read_state_dict(file);
  REQUIRE(names_of(dict) == std::vector<std::string>{"fc.weight", "fc.bias", "fc.weight_t", "bn.num_batches_tracked"});
  const auto weight = torch::arange(1, 7, torch::kFloat).reshape({2, 3});
  CHECK(torch::equal(dict["fc.weight"], weight));
  CHECK(torch::equal(dict["fc.bias"], torch::tensor({7.0f, 8.0f})));
  CHECK(torch::equal(dict["fc.weight_t"], weight.t()));
  CHECK(dict["bn.num_batches_tracked"].scalar_type() == torch::kLong);
  CHECK(dict["bn.num_batches_tracked"].dim() == 0);
  CHECK(dict["bn.num_batches_tracked"].item<std::int64_t>() == 42);
}

TEST_CASE("read_state_dict reads the parameters and buffers of a TorchScript file", "[weights]") {
  TempDir dir;
  const fs::path file = dir.path() / "scripted.pt";
  {
    auto unit = std::make_shared<torch::jit::CompilationUnit>();
    torch::jit::Module net("Net", unit);
    torch::jit::Module encoder("Encoder", unit);
    encoder.register_parameter("weight", torch::arange(6, torch::kFloat).reshape({2, 3}),
                               /*is_buffer=*/false);
    encoder.register_parameter("scale", torch::tensor({0.5, 2.0}, torch::kDouble),
                               /*is_buffer=*/true);
    net.register_module("encoder", encoder);
    net.register_parameter("bias", torch::ones({2}), /*is_buffer=*/false);
    net.save(file.string());
  }
  const models::StateDict dict = models::read_state_dict(file);
  auto names = names_of(dict);
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"bias", "encoder.scale", "encoder.weight"});
  CHECK(torch::equal(dict["encoder.weight"], torch::arange(6, torch::kFloat).reshape({2, 3})));
  CHECK(torch::equal(dict["encoder.scale"], torch::tensor({0.5, 2.0}, torch::kDouble)));
  CHECK(torch::equal(dict["bias"], torch::ones({2})));
  CHECK_FALSE(dict["encoder.weight"].requires_grad());

  const models::StateDict encoder = models::read_state_dict(file, "encoder");
  names = names_of(encoder);
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"scale", "weight"});
  CHECK_THROWS_WITH(models::read_state_dict(file, "decoder"),
                    Contains(file.string()) && Contains("no submodule \"decoder\""));
}

TEST_CASE("read_state_dict picks one dict of a nested file by key", "[weights]") {
  TempDir dir;
  const fs::path file = dir.path() / "nested.pt";
  Net net = make_net(1);
  Net ema = make_net(3);
  {
    auto as_dict = [](const torch::nn::Module& module) {
      c10::Dict<std::string, at::Tensor> out;
      for (const auto& item : models::state_dict(module)) out.insert(item.key(), item.value());
      return out;
    };
    c10::impl::GenericDict checkpoint(c10::StringType::get(), c10::AnyType::get());
    checkpoint.insert("model", as_dict(*net));
    checkpoint.insert("ema", as_dict(*ema));
    checkpoint.insert("step", int64_t{1200});
    const std::vector<char> pickle = torch::pickle_save(checkpoint);
    write_bytes(file, {pickle.data(), pickle.size()});
  }
  const models::StateDict read = models::read_state_dict(file, "ema");
  const models::StateDict expected = models::state_dict(*ema);
  REQUIRE(names_of(read) == names_of(expected));
  for (const auto& item : expected) CHECK(torch::equal(read[item.key()], item.value()));

  Net fresh = make_net(4);
  models::ReadStateDictOptions options;
  options.key = "model";
  models::load_weights(*fresh, file, options);
  const torch::Tensor x = torch::randn({2, 1, 5, 5});
  CHECK(torch::equal(fresh->forward(x), net->forward(x)));

  CHECK_THROWS_WITH(models::read_state_dict(file),
                    Contains(file.string()) && Contains("no tensors at the top level") && Contains("model, ema"));
  CHECK_THROWS_WITH(models::read_state_dict(file, "swa"), Contains("no entry \"swa\"") && Contains("model, ema"));
  CHECK_THROWS_WITH(models::read_state_dict(file, "step"), Contains("entry \"step\" is a int"));
}

TEST_CASE("load_state_dict reports every missing, unexpected and mismatched name at once", "[weights]") {
  Net net = make_net(1);
  models::StateDict dict = models::state_dict(*make_net(2));
  models::StateDict changed("tensor");
  for (const auto& item : dict) {
    if (item.key() == "head.bias" || item.key() == "features.0.bias") continue;           // missing 2
    if (item.key() == "head.weight") changed.insert(item.key(), torch::zeros({4, 100}));  // mismatched
    else changed.insert(item.key(), item.value());
  }
  changed.insert("tail.weight", torch::zeros({3}));  // unexpected
  const torch::Tensor before = net->head->weight.clone();

  CHECK_THROWS_WITH(models::load_state_dict(*net, changed, {.source = "weights.pt"}),
                    Contains("state dict from weights.pt does not match the model") &&
                        Contains("missing 2 (features.0.bias, head.bias)") && Contains("unexpected 1 (tail.weight)") &&
                        Contains("mismatched 1 (head.weight: file [4, 100] vs model [3, 100])"));
  CHECK(torch::equal(net->head->weight, before));  // nothing copied

  // Not strict: names may be missing or extra, shapes must still match.
  CHECK_THROWS_WITH(models::load_state_dict(*net, changed, {.strict = false}),
                    Contains("mismatched 1") && !Contains("missing"));
  changed["head.weight"] = torch::zeros({3, 100});
  const auto report = models::load_state_dict(*net, changed, {.strict = false});
  CHECK(report.missing == std::vector<std::string>{"features.0.bias", "head.bias"});
  CHECK(report.unexpected == std::vector<std::string>{"tail.weight"});
  CHECK(report.loaded == 7);
  CHECK(torch::equal(net->head->weight, torch::zeros({3, 100})));

  // A kind mismatch (integer into floating) counts as mismatched, with dtypes shown.
  models::StateDict ints = models::state_dict(*net);
  ints["head.bias"] = torch::zeros({3}, torch::kLong);
  CHECK_THROWS_WITH(models::load_state_dict(*net, ints),
                    Contains("mismatched 1 (head.bias: file Long [3] vs model Float [3])"));

  // Long lists are cut short.
  models::StateDict many("tensor");
  for (int i = 0; i < 20; ++i) many.insert("extra" + std::to_string(i), torch::zeros({1}));
  CHECK_THROWS_WITH(models::load_state_dict(*net, many, {.max_listed = 3}),
                    Contains("missing 9 (") && Contains("unexpected 20 (extra0, extra1, extra2, ... 17 more)"));
}

TEST_CASE("read_state_dict rejects missing, foreign and truncated files by name", "[weights]") {
  TempDir dir;
  const fs::path missing = dir.path() / "absent.pt";
  CHECK_THROWS_WITH(models::read_state_dict(missing), Contains(missing.string()) && Contains("no such file"));

  const fs::path noise = dir.path() / "noise.pt";
  std::mt19937 random(7);
  std::string bytes(4096, '\0');
  for (char& b : bytes) b = static_cast<char>(random() & 0xff);
  bytes[0] = 'x';
  write_bytes(noise, bytes);
  CHECK_THROWS_AS(models::read_state_dict(noise), std::invalid_argument);
  CHECK_THROWS_WITH(models::read_state_dict(noise),
                    Contains(noise.string()) && Contains("neither a torch.save file nor a TorchScript file"));

  const fs::path legacy = dir.path() / "legacy.pt";
  write_bytes(legacy, "\x80\x02\x8a\x0a");
  CHECK_THROWS_WITH(models::read_state_dict(legacy), Contains(legacy.string()) && Contains("legacy torch.save format"));

  const fs::path whole = dir.path() / "whole.pt";
  models::save_state_dict(*make_net(1), whole);
  const std::string full = read_bytes(whole);
  const fs::path truncated = dir.path() / "truncated.pt";
  write_bytes(truncated, full.substr(0, full.size() / 2));
  CHECK_THROWS_WITH(models::read_state_dict(truncated),
                    Contains(truncated.string()) && Contains("not a whole zip archive"));
  Net net = make_net(1);
  CHECK_THROWS_AS(models::load_weights(*net, truncated), std::invalid_argument);

  // A zip that is neither format.
  const fs::path other = dir.path() / "other.zip";
  {
    caffe2::serialize::PyTorchStreamWriter writer(other.string());
    writer.writeRecord("readme.txt", "hello", 5);
    writer.writeEndOfFile();
  }
  CHECK_THROWS_WITH(models::read_state_dict(other), Contains(other.string()) && Contains("no data.pkl record"));
}

TEST_CASE("read_state_dict strips DataParallel's module. prefix on request", "[weights]") {
  TempDir dir;
  const fs::path file = dir.path() / "parallel.pt";
  Net net = make_net(1);
  models::StateDict prefixed("tensor");
  for (const auto& item : models::state_dict(*net)) prefixed.insert("module." + item.key(), item.value());
  models::save_state_dict(prefixed, file);

  Net fresh = make_net(2);
  CHECK_THROWS_WITH(models::load_weights(*fresh, file), Contains("unexpected 9") &&
                                                            Contains("module.features.0.weight") &&
                                                            Contains("read them with strip_module_prefix"));
  models::load_weights(*fresh, file, {.strip_module_prefix = true});
  const torch::Tensor x = torch::randn({2, 1, 5, 5});
  CHECK(torch::equal(fresh->forward(x), net->forward(x)));
}

TEST_CASE("float64 and float16 files load into a float32 model", "[weights]") {
  TempDir dir;
  Net net = make_net(1);
  for (const auto dtype : {torch::kDouble, torch::kHalf}) {
    INFO(dtype);
    const fs::path file = dir.path() / "converted.pt";
    models::StateDict converted("tensor");
    for (const auto& item : models::state_dict(*net))
      converted.insert(item.key(), item.value().is_floating_point() ? item.value().to(dtype) : item.value());
    models::save_state_dict(converted, file);
    CHECK(models::read_state_dict(file)["head.weight"].scalar_type() == dtype);

    Net fresh = make_net(2);
    models::load_weights(*fresh, file);
    CHECK(fresh->head->weight.scalar_type() == torch::kFloat);
    CHECK(fresh->features[1]->as<torch::nn::BatchNorm2d>()->num_batches_tracked.scalar_type() == torch::kLong);
    const double tolerance = dtype == torch::kDouble ? 0.0 : 1e-3;
    CHECK(torch::allclose(fresh->head->weight, net->head->weight, tolerance, tolerance));
    CHECK(torch::allclose(fresh->features[1]->as<torch::nn::BatchNorm2d>()->running_var,
                          net->features[1]->as<torch::nn::BatchNorm2d>()->running_var, tolerance, tolerance));
  }
}
