#include <catch2/catch.hpp>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <torch/torch.h>
#include <unistd.h>
#include <zlib.h>

#include "diffctl/data/cifar10.hpp"
#include "diffctl/data/idx.hpp"
#include "diffctl/data/image_dataset.hpp"
#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using namespace diffctl::data;
using Catch::Contains;

using diffctl::testing::TempDir;

namespace {

using Bytes = std::vector<std::uint8_t>;

void write_plain(const fs::path& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

void write_gzip(const fs::path& path, const Bytes& bytes) {
  gzFile file = gzopen(path.c_str(), "wb");
  REQUIRE(file != nullptr);
  REQUIRE(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())) == static_cast<int>(bytes.size()));
  REQUIRE(gzclose(file) == Z_OK);
}

Bytes read_plain(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void put_u32(Bytes& out, std::uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(value >> shift));
}

Bytes random_bytes(std::size_t n, std::uint64_t seed, int below = 256) {
  std::mt19937_64 engine(seed);
  Bytes out(n);
  for (auto& b : out) b = static_cast<std::uint8_t>(engine() % static_cast<std::uint64_t>(below));
  return out;
}

Bytes idx_images(std::uint32_t items, std::uint32_t rows, std::uint32_t cols, const Bytes& pixels,
                 std::uint32_t magic = kIdxImagesMagic) {
  Bytes out;
  put_u32(out, magic);
  put_u32(out, items);
  put_u32(out, rows);
  put_u32(out, cols);
  out.insert(out.end(), pixels.begin(), pixels.end());
  return out;
}

Bytes idx_labels(const Bytes& labels, std::uint32_t items) {
  Bytes out;
  put_u32(out, kIdxLabelsMagic);
  put_u32(out, items);
  out.insert(out.end(), labels.begin(), labels.end());
  return out;
}

torch::Tensor as_tensor(const Bytes& bytes) {
  return torch::tensor(std::vector<int64_t>(bytes.begin(), bytes.end()), torch::kLong);
}

// A data set whose image i is filled with the value i, so a batch tells which
// examples it holds.
ImageDataset numbered_dataset(int64_t n, int64_t side = 28, int64_t classes = 10) {
  const torch::Tensor ids = torch::arange(n, torch::kLong);
  std::vector<std::string> names;
  for (int64_t c = 0; c < classes; ++c) names.push_back("class" + std::to_string(c));
  return {ids.to(torch::kUInt8).view({n, 1, 1, 1}).expand({n, 1, side, side}).contiguous(), ids % classes, names};
}

// The example ids of a batch of numbered_dataset, read back from its pixels.
std::vector<int64_t> ids_of(const Batch& batch) {
  const torch::Tensor centre = to_uint8(batch.images.select(1, 0).select(1, 14).select(1, 14)).to(torch::kLong);
  const torch::Tensor cpu = centre.to(torch::kCPU);
  return std::vector<int64_t>(cpu.data_ptr<int64_t>(), cpu.data_ptr<int64_t>() + cpu.numel());
}

std::vector<int64_t> epoch_ids(ImageBatches& batches) {
  std::vector<int64_t> ids;
  const int64_t epoch = batches.epoch();
  while (batches.epoch() == epoch) {
    const std::vector<int64_t> more = ids_of(batches.next());
    ids.insert(ids.end(), more.begin(), more.end());
  }
  return ids;
}

std::vector<torch::Device> devices() {
  std::vector<torch::Device> out{torch::kCPU};
  // With its index: a tensor on the GPU reports cuda:0, which is not equal to "cuda".
  if (torch::cuda::is_available()) out.emplace_back(torch::kCUDA, 0);
  return out;
}

}  // namespace

TEST_CASE("IDX images and labels read back exactly, gzipped and plain", "[data][idx]") {
  TempDir dir;
  const std::uint32_t items = 7, rows = 5, cols = 4;
  const Bytes pixels = random_bytes(items * rows * cols, 1);
  const Bytes labels = random_bytes(items, 2, 10);
  const torch::Tensor expected_images = as_tensor(pixels).to(torch::kUInt8).view({items, 1, rows, cols});

  write_gzip(dir / "images.gz", idx_images(items, rows, cols, pixels));
  write_gzip(dir / "labels.gz", idx_labels(labels, items));
  write_plain(dir / "images", idx_images(items, rows, cols, pixels));
  write_plain(dir / "labels", idx_labels(labels, items));
  const Bytes gz = read_plain(dir / "images.gz");
  REQUIRE((gz.size() > 2 && gz[0] == 0x1f && gz[1] == 0x8b));

  for (const std::string& suffix : {std::string(".gz"), std::string()}) {
    INFO("file suffix \"" << suffix << "\"");
    const torch::Tensor images = read_idx_images(dir / ("images" + suffix));
    CHECK(images.scalar_type() == torch::kUInt8);
    CHECK(images.sizes() == torch::IntArrayRef({items, 1, rows, cols}));
    CHECK(torch::equal(images, expected_images));
    const torch::Tensor read_labels = read_idx_labels(dir / ("labels" + suffix));
    CHECK(read_labels.scalar_type() == torch::kLong);
    CHECK(torch::equal(read_labels, as_tensor(labels)));
  }

  const ImageDataset dataset = read_idx_dataset(dir / "images.gz", dir / "labels", fashion_mnist_class_names());
  CHECK(dataset.size() == items);
  CHECK(dataset.num_classes() == 10);
  CHECK(torch::equal(dataset.images, expected_images));

  // An empty file set is legal IDX.
  write_plain(dir / "empty", idx_images(0, rows, cols, {}));
  CHECK(read_idx_images(dir / "empty").sizes() == torch::IntArrayRef({0, 1, rows, cols}));
}

TEST_CASE("Corrupt IDX files are rejected naming the file and the field", "[data][idx]") {
  TempDir dir;
  const std::uint32_t items = 6, rows = 3, cols = 3;
  const Bytes pixels = random_bytes(items * rows * cols, 3);
  Bytes labels = random_bytes(items, 4, 10);

  SECTION("magic number") {
    write_gzip(dir / "bad-magic.gz", idx_images(items, rows, cols, pixels, kIdxLabelsMagic));
    CHECK_THROWS_WITH(read_idx_images(dir / "bad-magic.gz"), Contains("bad-magic.gz") && Contains("magic number") &&
                                                                 Contains("expected 0x00000803") &&
                                                                 Contains("found 0x00000801"));
    write_plain(dir / "images-as-labels", idx_images(items, rows, cols, pixels));
    CHECK_THROWS_WITH(read_idx_labels(dir / "images-as-labels"),
                      Contains("images-as-labels") && Contains("magic number") && Contains("expected 0x00000801"));
  }
  SECTION("truncated pixels, plain and gzipped") {
    const Bytes short_pixels(pixels.begin(), pixels.end() - 5);
    write_plain(dir / "short", idx_images(items, rows, cols, short_pixels));
    write_gzip(dir / "short.gz", idx_images(items, rows, cols, short_pixels));
    for (const std::string name : {"short", "short.gz"})
      CHECK_THROWS_WITH(read_idx_images(dir / name), Contains(name) && Contains("truncated") &&
                                                         Contains("item count 6") && Contains("54") &&
                                                         Contains("found 49"));
  }
  SECTION("truncated header") {
    Bytes header;
    put_u32(header, kIdxImagesMagic);
    put_u32(header, items);
    write_plain(dir / "header-only", header);
    CHECK_THROWS_WITH(read_idx_images(dir / "header-only"),
                      Contains("header-only") && Contains("truncated header") && Contains("found 8"));
  }
  SECTION("a .gz file cut short") {
    write_gzip(dir / "whole.gz", idx_images(items * 50, rows, cols, random_bytes(items * rows * cols * 50, 5)));
    Bytes gz = read_plain(dir / "whole.gz");
    gz.resize(gz.size() / 2);
    write_plain(dir / "cut.gz", gz);
    CHECK_THROWS_WITH(read_idx_images(dir / "cut.gz"), Contains("cut.gz") && Contains("gzip"));
  }
  SECTION("corrupt gzip data") {
    write_gzip(dir / "whole.gz", idx_images(items, rows, cols, pixels));
    Bytes gz = read_plain(dir / "whole.gz");
    for (std::size_t i = 12; i < gz.size() - 8; ++i) gz[i] = static_cast<std::uint8_t>(gz[i] ^ 0x5a);
    write_plain(dir / "garbled.gz", gz);
    CHECK_THROWS_WITH(read_idx_images(dir / "garbled.gz"), Contains("garbled.gz"));
  }
  SECTION("trailing bytes") {
    Bytes longer = idx_labels(labels, items);
    longer.push_back(1);
    longer.push_back(2);
    write_gzip(dir / "long-labels.gz", longer);
    CHECK_THROWS_WITH(read_idx_labels(dir / "long-labels.gz"),
                      Contains("long-labels.gz") && Contains("2 unexpected bytes") && Contains("item count"));
  }
  SECTION("label out of range") {
    labels[5] = 12;
    write_gzip(dir / "labels.gz", idx_labels(labels, items));
    CHECK_THROWS_WITH(read_idx_labels(dir / "labels.gz"),
                      Contains("labels.gz") && Contains("label 12 at index 5") && Contains("expected < 10"));
    CHECK(read_idx_labels(dir / "labels.gz", 13)[5].item<int64_t>() == 12);
  }
  SECTION("image and label counts differ") {
    write_gzip(dir / "train-images-idx3-ubyte.gz", idx_images(items, rows, cols, pixels));
    const Bytes fewer(labels.begin(), labels.end() - 1);
    write_gzip(dir / "train-labels-idx1-ubyte.gz", idx_labels(fewer, items - 1));
    CHECK_THROWS_WITH(load_fashion_mnist(dir.path(), Split::train), Contains("train-labels-idx1-ubyte.gz") &&
                                                                        Contains("item count") &&
                                                                        Contains("expected 6") && Contains("found 5"));
  }
  SECTION("missing files") {
    CHECK_THROWS_WITH(read_idx_images(dir / "absent.gz"), Contains("absent.gz") && Contains("no such file"));
    CHECK_THROWS_WITH(load_fashion_mnist(dir.path(), Split::test),
                      Contains(dir.path().string()) && Contains("t10k-images-idx3-ubyte"));
    // Only the standard location points at the Debian package.
    CHECK_THROWS_WITH(read_idx_images(fs::path(kFashionMnistDir) / "absent-idx3-ubyte.gz"),
                      Contains("absent-idx3-ubyte.gz") && Contains("dataset-fashion-mnist"));
    CHECK_THROWS_WITH(load_fashion_mnist(dir.path()), !Contains("dataset-fashion-mnist"));
  }
}

TEST_CASE("Fashion-MNIST as Debian installs it", "[data][idx][fashion-mnist]") {
  std::error_code error;
  if (!fs::is_directory(kFashionMnistDir, error)) {
    WARN("skipped: " << kFashionMnistDir << " is absent (Debian package " << kFashionMnistPackage << ")");
    return;
  }
  const ImageDataset train = load_fashion_mnist(kFashionMnistDir, Split::train);
  const ImageDataset test = load_fashion_mnist(kFashionMnistDir, Split::test);
  CHECK(train.images.sizes() == torch::IntArrayRef({60000, 1, 28, 28}));
  CHECK(test.images.sizes() == torch::IntArrayRef({10000, 1, 28, 28}));
  CHECK(train.class_names == std::vector<std::string>{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                                                      "Shirt", "Sneaker", "Bag", "Ankle boot"});
  CHECK(torch::equal(class_counts(train), torch::full({10}, 6000, torch::kLong)));
  CHECK(torch::equal(class_counts(test), torch::full({10}, 1000, torch::kLong)));
  // The published per-pixel mean of the training images, 72.94 / 255.
  // Summed in a loop: a widening torch sum would first copy 47 M pixels to int64.
  const std::uint8_t* pixel = train.images.data_ptr<std::uint8_t>();
  const double mean = static_cast<double>(std::accumulate(pixel, pixel + train.images.numel(), std::int64_t{0})) /
                      static_cast<double>(train.images.numel());
  CHECK(mean / 255.0 == Approx(0.2860).margin(5e-4));
  CHECK(train.images.max().item<int>() == 255);
  // The first training example is an ankle boot, the first test example too.
  CHECK(train.labels[0].item<int64_t>() == 9);
  CHECK(test.labels[0].item<int64_t>() == 9);
}

TEST_CASE("CIFAR-10 batch files read back exactly; bad ones are rejected", "[data][cifar10]") {
  TempDir dir;
  const auto records = [](int64_t n, std::uint64_t seed) {
    Bytes out = random_bytes(static_cast<std::size_t>(n * kCifar10RecordBytes), seed);
    for (int64_t i = 0; i < n; ++i) out[static_cast<std::size_t>(i * kCifar10RecordBytes)] %= 10;
    return out;
  };
  const auto expected = [](const Bytes& bytes) {
    const int64_t n = static_cast<int64_t>(bytes.size()) / kCifar10RecordBytes;
    const torch::Tensor all = as_tensor(bytes).view({n, kCifar10RecordBytes});
    return std::pair{all.slice(1, 1).reshape({n, 3, 32, 32}).to(torch::kUInt8), all.select(1, 0).contiguous()};
  };
  const Bytes first = records(3, 10), second = records(2, 11), test = records(1, 12);
  write_plain(dir / "data_batch_1.bin", first);
  write_plain(dir / "data_batch_3.bin", second);  // a gap: whichever batches exist are read
  fs::create_directories(dir / "sub" / "cifar-10-batches-bin");
  write_plain(dir / "sub" / "cifar-10-batches-bin" / "test_batch.bin", test);

  const ImageDataset train = load_cifar10(dir.path(), Split::train);
  Bytes both = first;
  both.insert(both.end(), second.begin(), second.end());
  const auto [train_images, train_labels] = expected(both);
  CHECK(train.images.sizes() == torch::IntArrayRef({5, 3, 32, 32}));
  CHECK(train.images.scalar_type() == torch::kUInt8);
  CHECK(torch::equal(train.images, train_images));
  CHECK(torch::equal(train.labels, train_labels));
  CHECK(train.class_names == std::vector<std::string>{"airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                                      "horse", "ship", "truck"});
  // Channel-major: record byte 1 + c * 1024 + y * 32 + x is pixel (c, y, x).
  CHECK(train.images[1][2][3][4].item<int>() == first[kCifar10RecordBytes + 1 + 2 * 1024 + 3 * 32 + 4]);

  const ImageDataset one = load_cifar10(dir / "sub", Split::test);
  const auto [test_images, test_labels] = expected(test);
  CHECK(torch::equal(one.images, test_images));
  CHECK(torch::equal(one.labels, test_labels));

  Bytes wrong_length = first;
  wrong_length.push_back(0);
  write_plain(dir / "long.bin", wrong_length);
  CHECK_THROWS_WITH(read_cifar10_batch(dir / "long.bin"),
                    Contains("long.bin") && Contains("length 9220") && Contains("3073"));
  write_plain(dir / "empty.bin", {});
  CHECK_THROWS_WITH(read_cifar10_batch(dir / "empty.bin"), Contains("empty.bin") && Contains("length 0"));
  Bytes bad_label = first;
  bad_label[kCifar10RecordBytes] = 10;
  write_gzip(dir / "bad_label.bin.gz", bad_label);
  CHECK_THROWS_WITH(read_cifar10_batch(dir / "bad_label.bin.gz"),
                    Contains("bad_label.bin.gz") && Contains("label 10 at index 1"));
  CHECK_THROWS_WITH(load_cifar10(dir / "sub", Split::train),
                    Contains((dir / "sub").string()) && Contains("data_batch_1.bin"));
}

TEST_CASE("normalize_images and to_uint8 are inverse on every byte", "[data][loader]") {
  const torch::Tensor bytes = torch::arange(256, torch::kLong).to(torch::kUInt8);
  const torch::Tensor x = normalize_images(bytes);
  CHECK(x.scalar_type() == torch::kFloat);
  CHECK(x[0].item<float>() == -1.0f);
  CHECK(x[255].item<float>() == 1.0f);
  CHECK(torch::equal(to_uint8(x), bytes));
  const torch::Tensor out = to_uint8(torch::tensor({-3.0f, -1.0f, 0.0f, 0.999f, 4.0f}));
  CHECK(torch::equal(out, torch::tensor({0, 0, 128, 255, 255}, torch::kLong).to(torch::kUInt8)));
  CHECK_THROWS_WITH(normalize_images(x), Contains("uint8"));
  CHECK_THROWS_WITH(to_uint8(bytes), Contains("floating-point"));
}

TEST_CASE("ImageBatches: shapes, range, padding and device", "[data][loader]") {
  for (const torch::Device device : devices()) {
    INFO("device " << device);
    const ImageDataset dataset = numbered_dataset(10);
    ImageBatches batches(dataset, {.batch_size = 4, .shuffle = true, .seed = 7, .device = device});
    CHECK(batches.batches_per_epoch() == 3);
    CHECK(batches.size() == 10);
    const Batch first = batches.next();
    CHECK(first.images.sizes() == torch::IntArrayRef({4, 1, 28, 28}));
    CHECK(first.images.scalar_type() == torch::kFloat);
    CHECK(first.images.device() == device);
    CHECK(first.labels.scalar_type() == torch::kLong);
    CHECK(first.labels.device() == device);
    CHECK((first.epoch == 0 && first.step == 0));
    batches.next();
    const Batch last = batches.next();
    CHECK(last.images.size(0) == 2);
    CHECK(last.step == 2);
    CHECK(batches.epoch() == 1);
    // Labels travel with their images.
    const std::vector<int64_t> ids = ids_of(last);
    const torch::Tensor labels = last.labels.to(torch::kCPU);
    for (std::size_t i = 0; i < ids.size(); ++i) CHECK(labels[static_cast<int64_t>(i)].item<int64_t>() == ids[i] % 10);

    // Full-range pixels land on [-1, 1] exactly.
    ImageDataset extremes = numbered_dataset(2);
    extremes.images[0].fill_(0);
    extremes.images[1].fill_(255);
    ImageBatches range(extremes, {.batch_size = 2, .shuffle = false, .device = device});
    const torch::Tensor x = range.next().images;
    CHECK(x.min().item<float>() == -1.0f);
    CHECK(x.max().item<float>() == 1.0f);

    ImageBatches padded(dataset, {.batch_size = 3, .shuffle = false, .pad_to = 32, .device = device});
    const torch::Tensor p = padded.next().images.to(torch::kCPU);
    CHECK(p.sizes() == torch::IntArrayRef({3, 1, 32, 32}));
    const torch::Tensor centre = p.slice(2, 2, 30).slice(3, 2, 30);
    CHECK(torch::equal(centre, normalize_images(dataset.images.slice(0, 0, 3))));
    const torch::Tensor border = torch::ones({32, 32}, torch::kBool);
    border.slice(0, 2, 30).slice(1, 2, 30).fill_(false);
    CHECK((p.select(1, 0).masked_select(border.expand({3, 32, 32})) == -1.0f).all().item<bool>());
    CHECK((p.select(1, 0)[2].masked_select(border.logical_not()) != -1.0f).all().item<bool>());
  }
}

TEST_CASE("ImageBatches: seeded epochs visit every example once", "[data][loader]") {
  const ImageDataset dataset = numbered_dataset(10);
  const BatchOptions options{.batch_size = 4, .shuffle = true, .seed = 42};
  ImageBatches a(dataset, options), b(dataset, options);
  const std::vector<int64_t> a0 = epoch_ids(a), a1 = epoch_ids(a), b0 = epoch_ids(b);
  CHECK(a0 == b0);
  CHECK(a0 != a1);
  std::vector<int64_t> all(10);
  std::iota(all.begin(), all.end(), 0);
  for (std::vector<int64_t> ids : {a0, a1}) {
    std::sort(ids.begin(), ids.end());
    CHECK(ids == all);
  }
  CHECK(a.epoch() == 2);
  a.restart_at(1);
  CHECK(epoch_ids(a) == a1);

  // A run checkpointed after the first batch of epoch 1 resumes with the second.
  ImageBatches original(dataset, options), resumed(dataset, options);
  for (int i = 0; i < 4; ++i) original.next();  // epoch 0 (3 batches), then one of epoch 1
  resumed.seek(original.epoch(), original.step());
  for (int i = 0; i < 4; ++i) CHECK(ids_of(resumed.next()) == ids_of(original.next()));
  CHECK_THROWS_WITH(resumed.seek(0, 3), Contains("step: expected in [0, 3)"));

  ImageBatches other_seed(dataset, {.batch_size = 4, .shuffle = true, .seed = 43});
  CHECK(epoch_ids(other_seed) != a0);

  ImageBatches in_order(dataset, {.batch_size = 3, .shuffle = false});
  CHECK(epoch_ids(in_order) == all);
  CHECK(epoch_ids(in_order) == all);

  SECTION("drop_last") {
    ImageBatches dropping(dataset, {.batch_size = 4, .shuffle = true, .seed = 1, .drop_last = true});
    CHECK(dropping.batches_per_epoch() == 2);
    for (int epoch = 0; epoch < 3; ++epoch) {
      const Batch first = dropping.next(), second = dropping.next();
      CHECK((first.images.size(0) == 4 && second.images.size(0) == 4));
      CHECK(second.epoch == epoch);
      std::vector<int64_t> ids = ids_of(first), more = ids_of(second);
      ids.insert(ids.end(), more.begin(), more.end());
      CHECK(std::set<int64_t>(ids.begin(), ids.end()).size() == 8);
    }
    CHECK_THROWS_WITH(ImageBatches(dataset, {.batch_size = 11, .drop_last = true}),
                      Contains("drop_last") && Contains("11"));
  }
  SECTION("bad options") {
    CHECK_THROWS_WITH(ImageBatches(dataset, {.batch_size = 0}), Contains("batch_size"));
    CHECK_THROWS_WITH(ImageBatches(dataset, {.pad_to = 20}), Contains("pad_to") && Contains("28x28"));
    ImageDataset broken = dataset;
    broken.labels = broken.labels.slice(0, 0, 9);
    CHECK_THROWS_WITH(ImageBatches(broken), Contains("item count"));
  }
}

TEST_CASE("subset is seeded and can balance the classes", "[data][loader]") {
  const ImageDataset dataset = numbered_dataset(100, 4);
  const ImageDataset a = subset(dataset, 20, 5), b = subset(dataset, 20, 5), c = subset(dataset, 20, 6);
  CHECK(a.size() == 20);
  CHECK(torch::equal(a.images, b.images));
  CHECK(!torch::equal(a.images, c.images));
  CHECK(a.class_names == dataset.class_names);
  const torch::Tensor ids = a.images.select(1, 0).select(1, 0).select(1, 0).to(torch::kLong);
  CHECK(torch::equal(a.labels, ids % 10));
  CHECK(std::get<0>(torch::unique_consecutive(ids)).numel() == 20);

  const ImageDataset balanced = subset(dataset, 23, 5, true);
  CHECK(torch::equal(class_counts(balanced), torch::tensor({3, 3, 3, 2, 2, 2, 2, 2, 2, 2}, torch::kLong)));
  CHECK_THROWS_WITH(subset(dataset, 101, 0), Contains("subset") && Contains("101"));
  ImageDataset lopsided = numbered_dataset(12, 4);
  lopsided.labels[2] = 0;  // class 2 now has no example
  CHECK_THROWS_WITH(subset(lopsided, 10, 0, true), Contains("class 2") && Contains("has 0"));
}

TEST_CASE("Prompts map class names to conditions and back", "[data][prompts]") {
  const Prompts prompts = fashion_mnist_prompts();
  CHECK(prompts.size() == 10);
  for (int64_t i = 0; i < prompts.size(); ++i) CHECK(prompts.index_of(prompts.name_of(i)) == i);
  CHECK(prompts.index_of("Sneaker") == 7);
  CHECK(prompts.index_of("ankle BOOT") == 9);
  const torch::Tensor z = parse_prompts(prompts, "Sneaker,Bag, T-shirt/top ");
  CHECK(z.scalar_type() == torch::kLong);
  CHECK(torch::equal(z, torch::tensor({7, 8, 0}, torch::kLong)));
  CHECK(prompts.names_of(z) == std::vector<std::string>{"Sneaker", "Bag", "T-shirt/top"});
  CHECK_THROWS_WITH(prompts.index_of("Snaker"),
                    Contains("\"Snaker\"") && Contains("\"T-shirt/top\"") && Contains("\"Ankle boot\""));
  CHECK_THROWS_WITH(prompts.parse("Bag,,Coat"), Contains("empty"));
  CHECK_THROWS_WITH(prompts.name_of(10), Contains("10"));
  CHECK_THROWS_WITH(Prompts({"a", "b", "a"}), Contains("\"a\" appears twice"));
  CHECK_THROWS_WITH(Prompts({"cat", "Cat"}).index_of("CAT"), Contains("several"));
  CHECK(Prompts({"cat", "Cat"}).index_of("Cat") == 1);
  CHECK(Prompts(numbered_dataset(3, 2, 3)).names() == std::vector<std::string>{"class0", "class1", "class2"});
  CHECK(parse_split("test") == Split::test);
  CHECK_THROWS_WITH(parse_split("val"), Contains("\"val\""));
}
