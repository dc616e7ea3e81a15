// The oracle, the persisted feedback dataset and the calibration report.

#include <torch/torch.h>

#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <algorithm>
#include <functional>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <random>
#include <thread>
#include <vector>
#include <cstdint>
#include <filesystem>
#include <string>

#include "diffctl/io/sqlite.hpp"
#include "diffctl/reward/calibration.hpp"
#include "diffctl/reward/feedback_dataset.hpp"
#include "diffctl/reward/oracle.hpp"
#include "diffctl/runtime.hpp"
#include "support/processes.hpp"
#include "support/temp_dir.hpp"

namespace {

using namespace diffctl;
using Catch::Matchers::Contains;
using diffctl::testing::read_bytes;
using diffctl::testing::TempDir;
using diffctl::testing::write_bytes;
namespace fs = std::filesystem;

// r(x) = sum of the coordinates, an analytic reward that ignores z.
struct SumReward {
  torch::Tensor operator()(const torch::Tensor& x, const torch::Tensor&) const { return x.flatten(1).sum(1); }
};

}  // namespace

TEST_CASE("a classifier reward is the probability of the prompted class", "[reward]") {
  torch::manual_seed(3);
  torch::nn::Linear classifier(3, 4);
  const torch::Tensor x = torch::randn({5, 3});
  const torch::Tensor z = torch::tensor({0, 3, 1, 2, 3}, torch::kLong);
  const torch::Tensor expected = torch::softmax(classifier(x), 1).gather(1, z.unsqueeze(1)).squeeze(1);

  const reward::ClassifierReward probability(classifier);
  CHECK(torch::allclose(probability(x, z), expected, 1e-6, 1e-7));
  const reward::ClassifierReward log_probability(classifier, reward::RewardScale::log_probability);
  CHECK(torch::allclose(log_probability(x, z), expected.log(), 1e-5, 1e-6));

  // Stacked heads: logits [M, B, K] with per-member classes [M, B] or shared [B].
  const torch::Tensor logits = torch::randn({2, 5, 4});
  const torch::Tensor shared = reward::class_reward(logits, z, reward::RewardScale::probability);
  REQUIRE(shared.sizes() == torch::IntArrayRef({2, 5}));
  CHECK(torch::allclose(shared[1], torch::softmax(logits[1], 1).gather(1, z.unsqueeze(1)).squeeze(1)));
  CHECK(torch::allclose(reward::class_reward(logits, z.expand({2, 5}), reward::RewardScale::probability), shared));

  CHECK_THROWS_WITH(probability(x, torch::tensor({0, 4, 1, 2, 3}, torch::kLong)),
                    Contains("z must lie in [0, 4)") && Contains("[0, 4]"));
  CHECK_THROWS_WITH(probability(x, z.to(torch::kInt)), Contains("int64"));
  CHECK_THROWS_WITH(probability(x, torch::Tensor{}), Contains("needs the prompted classes"));
  CHECK_THROWS_WITH(probability(x, z.narrow(0, 0, 4)), Contains("5 samples"));
}

TEST_CASE("the oracle adds seeded Gaussian noise and counts every query", "[reward]") {
  constexpr int64_t n = 20000;
  constexpr double noise = 0.5;
  reward::Oracle oracle(SumReward{}, {.noise_std = noise, .budget = std::nullopt, .seed = 11});
  const torch::Tensor x = torch::full({n, 2}, 0.25);
  const torch::Tensor y = oracle.query(x, {});
  CHECK(oracle.queries() == n);
  CHECK(!oracle.remaining());
  // Mean 0.5 within 4 standard errors; the sample std within 4 of its standard
  // errors (sigma / sqrt(2n)).
  CHECK(std::abs(y.mean().item<double>() - 0.5) < 4 * noise / std::sqrt(double(n)));
  CHECK(std::abs(y.std().item<double>() - noise) < 4 * noise / std::sqrt(2.0 * n));

  // The noiseless reward is not a query.
  CHECK(torch::allclose(oracle.ground_truth(x.narrow(0, 0, 3), {}), torch::full({3}, 0.5)));
  CHECK(oracle.queries() == n);

  reward::Oracle same(SumReward{}, {.noise_std = noise, .budget = std::nullopt, .seed = 11});
  reward::Oracle other(SumReward{}, {.noise_std = noise, .budget = std::nullopt, .seed = 12});
  CHECK(torch::equal(same.query(x, {}), y));
  CHECK(!torch::equal(other.query(x, {}), y));

  CHECK_THROWS_WITH(reward::Oracle(SumReward{}, {.noise_std = -1.0}), Contains("noise_std"));
}

TEST_CASE("the oracle refuses a query beyond its budget whole", "[reward]") {
  reward::Oracle oracle(SumReward{}, {.noise_std = 0.1, .budget = 10, .seed = 1});
  oracle.query(torch::zeros({6, 1}), {});
  CHECK_THROWS_AS(oracle.query(torch::zeros({5, 1}), {}), reward::BudgetExhausted);
  CHECK_THROWS_WITH(oracle.query(torch::zeros({5, 1}), {}),
                    Contains("budget exhausted") && Contains("5 queries asked") && Contains("4 of 10 left"));
  CHECK(oracle.queries() == 6);
  CHECK(*oracle.remaining() == 4);
  oracle.query(torch::zeros({4, 1}), {});
  CHECK(*oracle.remaining() == 0);
  CHECK_THROWS_AS(oracle.query(torch::zeros({1, 1}), {}), reward::BudgetExhausted);
}

TEST_CASE("a restored oracle continues the count and the noise stream", "[reward]") {
  reward::Oracle first(SumReward{}, {.noise_std = 1.0, .budget = 100, .seed = 5});
  first.query(torch::zeros({7, 1}), {});
  const reward::OracleState saved = first.state();
  const torch::Tensor next = first.query(torch::zeros({5, 1}), {});

  reward::Oracle resumed(SumReward{}, {.noise_std = 1.0, .budget = 100, .seed = 99});
  resumed.restore(saved);
  CHECK(resumed.queries() == 7);
  CHECK(torch::equal(resumed.query(torch::zeros({5, 1}), {}), next));

  reward::Oracle small(SumReward{}, {.noise_std = 1.0, .budget = 3, .seed = 5});
  CHECK_THROWS_WITH(small.restore(saved), Contains("7 queries") && Contains("budget of 3"));
}

TEST_CASE("a bound feedback dataset is on disk after every append and reloads whole", "[reward]") {
  TempDir dir;
  const fs::path file = dir / "run" / "feedback.sqlite";
  reward::Oracle oracle(SumReward{}, {.noise_std = 0.2, .budget = std::nullopt, .seed = 4});
  auto generator = make_generator(8);
  reward::FeedbackDataset data(file);
  CHECK(data.empty());
  CHECK(!fs::exists(file));

  const torch::Tensor x0 = torch::randn({3, 1, 2, 2}, generator);
  const torch::Tensor z0 = torch::tensor({2, 0, 1}, torch::kLong);
  oracle.record(data, x0, z0, 0);
  REQUIRE(fs::exists(file));
  const torch::Tensor x1 = torch::randn({2, 1, 2, 2}, generator);
  const torch::Tensor z1 = torch::tensor({1, 1}, torch::kLong);
  const torch::Tensor y1 = oracle.record(data, x1, z1, 1);

  const reward::FeedbackDataset loaded(file);  // a second connection, while the first is open
  REQUIRE(loaded.size() == 5);
  CHECK(loaded.sample_shape() == std::vector<int64_t>{1, 2, 2});
  CHECK(torch::equal(loaded.x(), torch::cat({x0, x1})));
  CHECK(torch::equal(loaded.z(), torch::cat({z0, z1})));
  CHECK(torch::equal(loaded.y(), data.y()));
  CHECK(torch::equal(loaded.y().narrow(0, 3, 2), y1));
  CHECK(torch::equal(loaded.rounds(), torch::tensor({0, 0, 0, 1, 1}, torch::kLong)));
  CHECK(loaded.count_in_round(0) == 3);
  CHECK(loaded.has_round(1));
  CHECK(!loaded.has_round(2));
  REQUIRE(loaded.oracle_state());
  CHECK(loaded.oracle_state()->queries == 5);
  CHECK(torch::equal(loaded.oracle_state()->generator_state, oracle.state().generator_state));

  // Unconditional data, unbound, saved and loaded explicitly.
  reward::FeedbackDataset plain;
  plain.append(torch::ones({4, 2}), {}, torch::arange(4, torch::kDouble), 0);
  plain.save(dir / "plain.sqlite");
  const auto reread = reward::FeedbackDataset::load(dir / "plain.sqlite");
  CHECK(!reread.z().defined());
  CHECK(!reread.oracle_state());
  CHECK(torch::equal(reread.y(), torch::arange(4, torch::kDouble)));
  CHECK_THROWS_WITH(reward::FeedbackDataset::load(dir / "absent.sqlite"), Contains("no such file"));
}

namespace {

// The samples of chunk k of the writer below: 4 rows of value k.
torch::Tensor chunk_samples(int64_t k) { return torch::full({4, 3}, double(k)); }

// Appends chunks 0, 1, ... (one per round) to `file` until it holds `chunks`,
// continuing the oracle from the store: what a resumed run does.
int64_t write_chunks(const fs::path& file, int64_t chunks) {
  reward::Oracle oracle(SumReward{}, {.noise_std = 0.3, .budget = std::nullopt, .seed = 21});
  reward::FeedbackDataset data(file);
  if (data.oracle_state()) oracle.restore(*data.oracle_state());
  const int64_t before = oracle.queries();
  for (int64_t k = data.size() / 4; k < chunks; ++k) oracle.record(data, chunk_samples(k), {}, k);
  return oracle.queries() - before;
}

// More than the writer can append before the kill test kills it: its every kill comes
// mid-run, however fast the machine (a writer that finished would exit, not be killed).
constexpr int64_t kWriterChunks = 1'000'000;

}  // namespace

// Run by the kill test below in a child process (hidden from the suite).
TEST_CASE("feedback writer for the kill test", "[.feedback-writer]") {
  const char* file = std::getenv("DIFFCTL_TEST_FEEDBACK_FILE");
  REQUIRE(file != nullptr);
  write_chunks(file, kWriterChunks);
}

TEST_CASE("a resumed run has every label it paid for and asks none twice", "[reward]") {
  TempDir dir;
  const fs::path file = dir / "feedback.sqlite";
  CHECK(write_chunks(file, 2) == 8);  // killed after round 1
  CHECK(write_chunks(file, 3) == 4);  // resumed: only round 2 is asked
  CHECK(write_chunks(file, 3) == 0);  // nothing left to ask
  const reward::FeedbackDataset resumed(file);

  TempDir straight_dir;
  write_chunks(straight_dir / "feedback.sqlite", 3);
  CHECK(torch::equal(resumed.y(), reward::FeedbackDataset(straight_dir / "feedback.sqlite").y()));
  CHECK(resumed.oracle_state()->queries == 12);
}

TEST_CASE("a resumed round asks only the rows its killed run did not", "[reward]") {
  // Round 1 draws chunks of 5, 3 and 4 rows (row i holds the value i); its killed
  // run had stored 6 labels: all of the first chunk and one row of the second.
  const auto round_of = [](const fs::path& file, int64_t stored_before) {
    reward::Oracle oracle(SumReward{}, {.noise_std = 0.3, .budget = std::nullopt, .seed = 3});
    reward::FeedbackDataset data(file);
    if (data.oracle_state()) oracle.restore(*data.oracle_state());
    CHECK(data.asked_in_round(1) == stored_before);
    reward::RoundQueries queries(data, 1);
    int64_t first = 0;
    for (const int64_t rows : {5, 3, 4}) {
      queries.ask(oracle, torch::arange(first, first + rows, torch::kDouble).unsqueeze(1), {});
      first += rows;
    }
    return oracle.queries();
  };
  TempDir dir;
  {
    reward::Oracle killed(SumReward{}, {.noise_std = 0.3, .budget = std::nullopt, .seed = 3});
    reward::FeedbackDataset data(dir / "feedback.sqlite");
    killed.record(data, torch::arange(6, torch::kDouble).unsqueeze(1), {}, 1);
  }
  CHECK(round_of(dir / "feedback.sqlite", 6) == 12);   // 6 before the kill, 6 after it
  CHECK(round_of(dir / "feedback.sqlite", 12) == 12);  // a round done asks nothing
  TempDir straight;
  CHECK(round_of(straight / "feedback.sqlite", 0) == 12);
  const reward::FeedbackDataset resumed(dir / "feedback.sqlite"), whole(straight / "feedback.sqlite");
  CHECK(torch::equal(resumed.x(), torch::arange(12, torch::kDouble).unsqueeze(1).to(resumed.x().dtype())));
  CHECK(torch::equal(resumed.y(), whole.y()));
}

TEST_CASE("a writer killed at random points loses no label and asks none twice", "[reward]") {
  TempDir dir;
  const fs::path file = dir / "feedback.sqlite";
  std::mt19937 random(7);
  std::vector<int64_t> rows_after_kill;
  for (int kill = 0; kill < 5; ++kill) {
    testing::ChildProcess writer("[.feedback-writer]", {"DIFFCTL_TEST_FEEDBACK_FILE=" + file.string()});
    // Kill it while it appends: after it has written something new, at a random moment.
    const int64_t before = rows_after_kill.empty() ? 0 : rows_after_kill.back();
    for (int wait = 0; wait < 3000; ++wait) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      if (fs::exists(file) && reward::FeedbackDataset(file).size() > before) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 60)(random)));
    writer.kill();
    const int status = writer.wait().value();
    CHECK(WIFSIGNALED(status));
    const reward::FeedbackDataset data(file);
    CHECK(data.size() % 4 == 0);
    REQUIRE(data.oracle_state());
    CHECK(data.oracle_state()->queries == data.size());
    rows_after_kill.push_back(data.size());
  }
  std::string counts;
  for (const int64_t n : rows_after_kill) counts += std::to_string(n) + " ";
  INFO("rows after each kill: " << counts);
  CHECK(std::ranges::adjacent_find(rows_after_kill, std::greater_equal<>{}) == rows_after_kill.end());

  // The killed and resumed run's labels, completed, are the uninterrupted run's.
  const int64_t chunks = rows_after_kill.back() / 4 + 1;
  write_chunks(file, chunks);
  TempDir straight;
  write_chunks(straight / "feedback.sqlite", chunks);
  const reward::FeedbackDataset resumed(file), uninterrupted(straight / "feedback.sqlite");
  CHECK(torch::equal(resumed.x(), uninterrupted.x()));
  CHECK(torch::equal(resumed.y(), uninterrupted.y()));
  CHECK(resumed.oracle_state()->queries == 4 * chunks);
}

TEST_CASE("one dataset writes to a store at a time", "[reward]") {
  TempDir dir;
  const fs::path file = dir / "feedback.sqlite";
  {
    reward::FeedbackDataset first(file);
    first.append(torch::zeros({2, 3}), {}, torch::zeros({2}), 1);
    reward::FeedbackDataset second(file);  // reading is fine
    CHECK(second.size() == 2);
    CHECK_THROWS_WITH(second.append(torch::ones({2, 3}), {}, torch::ones({2}), 2),
                      Contains(file.string()) && Contains("another process is writing"));
    CHECK_THROWS_WITH(second.ask(torch::ones({1, 3}), {}, 2), Contains("another process is writing"));
    first.append(torch::ones({2, 3}), {}, torch::ones({2}), 2);
  }
  // The writer gone, the next one takes over with what it wrote.
  reward::FeedbackDataset next(file);
  next.append(torch::ones({1, 3}), {}, torch::ones({1}), 3);
  CHECK(next.size() == 5);
  CHECK(reward::FeedbackDataset(file).count_in_round(2) == 2);
}

TEST_CASE("a failed write leaves the dataset and its store as they were", "[reward]") {
  TempDir dir;
  const fs::path file = dir / "feedback.sqlite";
  reward::Oracle oracle(SumReward{}, {.noise_std = 0.1, .budget = std::nullopt, .seed = 2});
  reward::FeedbackDataset data(file);
  oracle.record(data, torch::ones({2, 3}), {}, 0);
  const reward::OracleState after_round_0 = oracle.state();
  // The disk refuses the second row of round 1 (a trigger stands in for a full disk),
  // after the first was inserted: the whole chunk and the oracle's state roll back.
  io::Sqlite(file).exec(
      "CREATE TRIGGER refuse BEFORE INSERT ON labels WHEN NEW.round = 1 AND "
      "(SELECT count(*) FROM labels WHERE round = 1) = 1 BEGIN SELECT RAISE(ABORT, 'disk full'); END");
  CHECK_THROWS_WITH(oracle.record(data, torch::ones({2, 3}), {}, 1), Contains("disk full"));
  CHECK(data.size() == 2);
  CHECK(!data.has_round(1));
  const reward::FeedbackDataset reread(file);
  CHECK(reread.size() == 2);
  CHECK(reread.oracle_state()->queries == after_round_0.queries);
  CHECK(torch::equal(reread.oracle_state()->generator_state, after_round_0.generator_state));
}

TEST_CASE("a corrupt or foreign store is reported with its name, never half-loaded", "[reward]") {
  TempDir dir;
  const fs::path file = dir / "feedback.sqlite";
  {
    reward::FeedbackDataset data(file);
    data.append(torch::full({8, 4}, 1234.5f), torch::zeros({8}, torch::kLong), torch::randn({8}), 0);
  }  // closed: the journal is folded into the file
  const std::string bytes = read_bytes(file);

  // A flipped bit in a sample's bytes: its row's checksum.
  float value = 1234.5f;
  const std::size_t at = bytes.find(std::string(reinterpret_cast<const char*>(&value), sizeof(value)));
  REQUIRE(at != std::string::npos);
  std::string flipped = bytes;
  flipped[at + 1] = static_cast<char>(flipped[at + 1] ^ 0x10);
  write_bytes(file, flipped);
  CHECK_THROWS_WITH(reward::FeedbackDataset(file),
                    Contains(file.string()) && Contains("checksum mismatch") && Contains("row "));

  write_bytes(file, bytes.substr(0, bytes.size() / 2));
  CHECK_THROWS_WITH(reward::FeedbackDataset(file), Contains(file.string()));

  write_bytes(file, "col1,col2\n1,2\n");
  CHECK_THROWS_WITH(reward::FeedbackDataset(file), Contains(file.string()) && Contains("not an SQLite database"));
  write_bytes(file, "");
  CHECK_THROWS_WITH(reward::FeedbackDataset(file), Contains("not an SQLite database"));
  write_bytes(file, std::string("DFBK\1\0\0\0", 8));
  CHECK_THROWS_WITH(reward::FeedbackDataset(file), Contains("earlier format"));

  fs::remove(file);
  io::Sqlite(file, /*create=*/true).exec("CREATE TABLE songs(title TEXT)");
  CHECK_THROWS_WITH(reward::FeedbackDataset(file), Contains(file.string()) && Contains("another application"));

  // Rows written by something else that break the store's rules.
  fs::remove(file);
  reward::FeedbackDataset(file).append(torch::zeros({2, 4}), torch::zeros({2}, torch::kLong), torch::zeros({2}), 0);
  io::Sqlite(file).exec("UPDATE labels SET label = 'high' WHERE id = 2");
  CHECK_THROWS_WITH(reward::FeedbackDataset(file), Contains("row 2") && Contains("label must be a number"));
  io::Sqlite(file).exec("UPDATE labels SET label = 1e999 WHERE id = 2");
  CHECK_THROWS_WITH(reward::FeedbackDataset(file), Contains("row 2") && Contains("finite"));
  io::Sqlite(file).exec("UPDATE labels SET label = 0.5, round = -1 WHERE id = 2");
  CHECK_THROWS_WITH(reward::FeedbackDataset(file), Contains("row 2") && Contains("round"));

  write_bytes(file, bytes);
  fs::remove(file.string() + "-wal");
  fs::remove(file.string() + "-shm");
  CHECK(reward::FeedbackDataset(file).size() == 8);
}

TEST_CASE("labels written into the store by another process join the data", "[reward]") {
  TempDir dir;
  const fs::path file = dir / "feedback.sqlite";
  reward::FeedbackDataset data(file);
  CHECK_THROWS_WITH(reward::FeedbackDataset{}.ask(torch::zeros({1, 2}), {}, 0), Contains("bound to a file"));
  data.append(torch::zeros({1, 2}), torch::tensor({0}, torch::kLong), torch::tensor({0.25}), 0);
  const std::vector<int64_t> ids = data.ask(torch::ones({3, 2}), torch::tensor({1, 2, 1}, torch::kLong), 1);
  CHECK(ids == std::vector<int64_t>{2, 3, 4});
  CHECK(data.size() == 1);
  CHECK(data.pending(1) == 3);
  CHECK(data.asked_in_round(1) == 3);
  CHECK(reward::FeedbackDataset(file).pending() == 3);  // pending rows are on disk

  // A person with the sqlite3 command labels two of them.
  const std::string command = "sqlite3 '" + file.string() +
                              "' \"UPDATE labels SET label = id * 0.5, labelled_at = datetime('now') "
                              "WHERE label IS NULL AND id <= 3\"";
  REQUIRE(std::system(command.c_str()) == 0);
  CHECK(data.refresh() == 1);
  CHECK(data.size() == 3);
  CHECK(torch::equal(data.y(), torch::tensor({0.25, 1.0, 1.5}, torch::kDouble)));
  CHECK(torch::equal(data.z(), torch::tensor({0, 1, 2}, torch::kLong)));
  CHECK(data.pending(1) == 1);
  CHECK(data.asked_in_round(1) == 3);
}

TEST_CASE("the feedback dataset rejects bad labels and mismatched batches", "[reward]") {
  reward::FeedbackDataset data;
  const torch::Tensor x = torch::zeros({3, 2});
  const torch::Tensor z = torch::zeros({3}, torch::kLong);
  CHECK_THROWS_WITH(data.append(x, z, torch::tensor({0.0, std::nan(""), 1.0}, torch::kDouble), 0),
                    Contains("label 1") && Contains("finite"));
  CHECK_THROWS_WITH(data.append(x, z, torch::zeros({2}), 0), Contains("3 samples but y"));
  CHECK_THROWS_WITH(data.append(x, torch::zeros({2}, torch::kLong), torch::zeros({3}), 0), Contains("3 samples but z"));
  CHECK_THROWS_WITH(data.append(torch::zeros({0, 2}), {}, torch::zeros({0}), 0), Contains("non-empty"));
  CHECK_THROWS_WITH(data.append(x, z, torch::zeros({3}), -1), Contains("round"));
  CHECK(data.empty());

  data.append(x, z, torch::zeros({3}), 0);
  CHECK_THROWS_WITH(data.append(x, {}, torch::zeros({3}), 0), Contains("holds conditions z"));
  CHECK_THROWS_WITH(data.append(torch::zeros({3, 5}), z, torch::zeros({3}), 0), Contains("samples are [2]"));
  CHECK(data.size() == 3);
}

TEST_CASE("the calibration report counts coverage and correlates uncertainty with error", "[reward]") {
  const torch::Tensor mean = torch::zeros({4}, torch::kDouble);
  const torch::Tensor truth = torch::tensor({0.5, 1.5, 2.5, 3.5}, torch::kDouble);
  const auto flat = reward::calibration_report(mean, torch::ones({4}, torch::kDouble), truth);
  CHECK(flat.samples == 4);
  CHECK(flat.coverage[0] == Approx(0.25));
  CHECK(flat.coverage[1] == Approx(0.5));
  CHECK(flat.coverage[2] == Approx(0.75));
  CHECK(std::isnan(flat.error_correlation));  // a constant uncertainty correlates with nothing
  CHECK(flat.mean_abs_error == Approx(2.0));

  // An uncertainty proportional to the error: full coverage at k = 1, correlation 1.
  const auto tracking = reward::calibration_report(mean, 2.0 * truth, truth);
  CHECK(tracking.coverage[0] == Approx(1.0));
  CHECK(tracking.error_correlation == Approx(1.0));
  CHECK(tracking.mean_uncertainty == Approx(4.0));

  CHECK_THROWS_WITH(reward::calibration_report(mean, torch::ones({3}), truth), Contains("equal non-empty"));
}
