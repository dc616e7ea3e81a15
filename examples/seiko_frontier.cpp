// Reward against KL across finished seiko_demo runs: each run's final evaluation
// (metrics.json) becomes a point, runs of one method at one alpha and one budget of
// oracle labels (over seeds) one point with 95% t-intervals, and a method's alphas
// one curve. Writes into --out:
//
//   frontier.svg  oracle accuracy, diversity and class FD against the path KL to
//                 the pretrained model, a curve per method, each point named by alpha
//   frontier.md   the same figures as a Markdown table (also printed)
//   paired.md     with --baseline M: every other method minus M, seed by seed at the
//                 same alpha and budget (the spread between seeds, usually larger
//                 than the difference, cancels within a pair): mean differences with
//                 95% t-intervals, the pairs ahead in accuracy and the sign-flip
//                 p-value (metrics/paired_comparison.hpp); with --kl-slope, the
//                 accuracy difference at equal KL too
//   paired.svg    those accuracy differences per seed, with their mean and interval
//
//   build/examples/seiko_frontier --out out/frontier
//     SEIKO=out/sm_s0 SEIKO=out/sm_s1 SEIKO=out/sm_a0.1_s0 greedy=out/greedy_s0 DDPO=out/ddpo_s0
//   build/examples/seiko_frontier --out out/paired --baseline greedy --kl-slope 0.014
//     SEIKO=out/sm_s0 SEIKO=out/sm_s1 greedy=out/greedy_s0 greedy=out/greedy_s1

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "diffctl/error.hpp"
#include "diffctl/io/charts.hpp"
#include "diffctl/io/files.hpp"
#include "diffctl/metrics/paired_comparison.hpp"
#include "json_file.hpp"

using namespace diffctl;

namespace {

// The final figures that the frontier compares, as metrics.json names them, and
// their column names in the Markdown tables ("|" escaped).
const std::vector<std::pair<std::string, std::string>> kFigures{{"oracle_accuracy", "accuracy"},
                                                                {"oracle_probability", "p(z\\|x)"},
                                                                {"diversity", "diversity"},
                                                                {"class_fd", "class FD"},
                                                                {"kl_to_pretrained", "path KL (nats)"}};

struct Estimate {
  double mean = 0.0, half_width = 0.0;  // half_width: 95% t-interval (0 for one run)
};

Estimate estimate(const std::vector<double>& values) {
  if (values.size() == 1) return {values.front(), 0.0};
  const metrics::MeanInterval interval = metrics::mean_interval(values);
  return {interval.mean, interval.half_width};
}

// One method at one alpha and one budget of oracle labels: its runs' figures.
struct Group {
  std::string method;
  double alpha;  // NaN: a method without alpha (DDPO)
  int64_t labels;
  std::vector<std::string> runs;
  std::vector<std::optional<int64_t>> seeds;  // metrics.json's "seed", where it has one
  std::map<std::string, std::vector<double>> figures;
};

// A mean (with a sign where it is a difference) and its interval, if any.
std::string format(const Estimate& e, int decimals, bool difference = false) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(decimals) << (difference ? std::showpos : std::noshowpos) << e.mean
      << std::noshowpos;
  if (e.half_width > 0) out << " +- " << e.half_width;
  return out.str();
}

int decimals(const std::string& key) { return key == "class_fd" || key == "kl_to_pretrained" ? 1 : 3; }

std::string alpha_text(double alpha) {
  if (std::isnan(alpha)) return "-";
  std::ostringstream out;
  out << alpha;
  return out.str();
}

bool same_setting(const Group& a, const Group& b) {
  return (a.alpha == b.alpha || (std::isnan(a.alpha) && std::isnan(b.alpha))) && a.labels == b.labels;
}

// A group's runs by seed; a seed may appear once.
std::map<int64_t, std::size_t> runs_by_seed(const Group& g) {
  std::map<int64_t, std::size_t> index;
  for (std::size_t i = 0; i < g.runs.size(); ++i) {
    require(g.seeds[i].has_value(), g.runs[i], "/metrics.json: no \"seed\" (--baseline pairs runs by seed)");
    const auto [at, fresh] = index.emplace(*g.seeds[i], i);
    require(fresh, g.runs[at->second], " and ", g.runs[i], " are both ", g.method, " runs of seed ", *g.seeds[i],
            " at alpha ", alpha_text(g.alpha), " with ", g.labels, " labels: pairing needs one run per seed");
  }
  return index;
}

struct Paired {
  std::string table;                   // Markdown
  std::vector<io::ChartPanel> panels;  // accuracy differences per seed (and at equal KL)
};

// Every other method against `baseline` at the same alpha and budget of labels, run
// by run on the seeds both have: the mean difference of each figure with its 95%
// t-interval, and for the accuracy the pairs ahead and the sign-flip p-value; with a
// slope (accuracy per nat), the accuracy difference at equal KL too.
Paired paired_comparison(const std::vector<Group>& groups, const std::string& baseline,
                         std::optional<double> kl_slope) {
  std::ostringstream table, notes;
  std::vector<io::ChartPanel> panels{{.title = "accuracy, method minus " + baseline + ", per seed", .x_label = "seed"}};
  if (kl_slope) {
    std::ostringstream title;
    title << "the same at equal path KL (less " << *kl_slope << " per nat)";
    panels.push_back({.title = title.str(), .x_label = "seed"});
  }
  for (io::ChartPanel& panel : panels) {
    panel.y_marks = {0.0};
    panel.y_mark_labels = {"level"};
  }
  // A method's differences per seed as points, their mean and interval right of them
  // (named in the legend: a label there would cover the last seeds' points).
  const auto draw = [](io::ChartPanel& panel, const Group& g, const std::vector<double>& seeds,
                       const std::vector<double>& differences) {
    const std::string setting = " (alpha " + alpha_text(g.alpha) + ", " + std::to_string(g.labels) + " labels)";
    panel.series.push_back({.name = g.method + setting, .x = seeds, .y = differences, .lines = false});
    const Estimate mean = estimate(differences);
    panel.series.push_back({.name = g.method + ": mean, 95% interval",
                            .x = {*std::max_element(seeds.begin(), seeds.end()) + 1.5},
                            .y = {mean.mean},
                            .y_err = {mean.half_width},
                            .lines = false});
  };
  table << "| method minus " << baseline << " | alpha | oracle labels | pairs |";
  for (const auto& [key, name] : kFigures) table << " " << name << " |";
  table << " accuracy ahead | sign-flip p |" << (kl_slope ? " accuracy at equal KL | sign-flip p |" : "");
  table << "\n|---|---|---|---|";
  for (std::size_t i = 0; i < kFigures.size() + (kl_slope ? 4 : 2); ++i) table << "---|";
  table << "\n";
  const auto p_value = [](const std::vector<double>& d) {
    const double p = metrics::sign_flip_p_value(d);
    std::ostringstream out;
    out << std::fixed << std::setprecision(3) << p;
    return p < 0.001 ? std::string("< 0.001") : out.str();
  };
  // Every run has a seed, once per group, whether or not it finds a pair.
  std::vector<std::map<int64_t, std::size_t>> by_seed;
  for (const Group& g : groups) by_seed.push_back(runs_by_seed(g));
  bool found = false;
  for (std::size_t b = 0; b < groups.size(); ++b) {
    const Group& base = groups[b];
    if (base.method != baseline) continue;
    found = true;
    const auto& base_runs = by_seed[b];
    for (std::size_t k = 0; k < groups.size(); ++k) {
      const Group& g = groups[k];
      if (g.method == baseline || !same_setting(g, base)) continue;
      const auto& runs = by_seed[k];
      std::vector<std::pair<std::size_t, std::size_t>> pairs;
      std::set<int64_t> unpaired;
      for (const auto& [seed, i] : runs) {
        const auto match = base_runs.find(seed);
        if (match == base_runs.end()) unpaired.insert(seed);
        else pairs.emplace_back(i, match->second);
      }
      for (const auto& [seed, j] : base_runs)
        if (!runs.contains(seed)) unpaired.insert(seed);
      if (!unpaired.empty()) {
        notes << g.method << " and " << baseline << " at alpha " << alpha_text(g.alpha) << ", " << g.labels
              << " labels: seeds run by one of them only, left out:";
        for (const int64_t seed : unpaired) notes << " " << seed;
        notes << ".\n";
      }
      if (pairs.empty()) continue;
      const auto differences = [&](const std::string& key) {
        std::vector<double> d;
        for (const auto& [i, j] : pairs) d.push_back(g.figures.at(key)[i] - base.figures.at(key)[j]);
        return d;
      };
      table << "| " << g.method << " | " << alpha_text(g.alpha) << " | " << g.labels << " | " << pairs.size() << " |";
      for (const auto& [key, name] : kFigures)
        table << " " << format(estimate(differences(key)), decimals(key), true) << " |";
      std::vector<double> accuracy = differences("oracle_accuracy"), seeds;
      for (const auto& [i, j] : pairs) seeds.push_back(double(*g.seeds[i]));
      draw(panels[0], g, seeds, accuracy);
      table << " " << std::count_if(accuracy.begin(), accuracy.end(), [](double d) { return d > 0; }) << " of "
            << pairs.size() << " | " << p_value(accuracy) << " |";
      if (kl_slope) {
        const std::vector<double> kl = differences("kl_to_pretrained");
        for (std::size_t k = 0; k < accuracy.size(); ++k) accuracy[k] -= *kl_slope * kl[k];
        table << " " << format(estimate(accuracy), 3, true) << " | " << p_value(accuracy) << " |";
        draw(panels[1], g, seeds, accuracy);
      }
      table << "\n";
    }
  }
  require(found, "--baseline ", baseline, ": no runs of that method");
  table << "\nMean difference over runs paired by seed (metrics.json's \"seed\") +- its 95% t-interval; accuracy "
           "ahead: pairs with a positive accuracy difference; sign-flip p: two-sided, over all 2^n sign "
           "assignments up to 20 pairs, else 200,000 random ones.";
  if (kl_slope)
    table << " At equal KL: each pair's accuracy difference less " << *kl_slope
          << " per nat of its path-KL difference.";
  table << "\n" << notes.str();
  return {table.str(), std::move(panels)};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Reward against KL across finished seiko_demo runs, a curve per method over alpha"};
  std::string out = "out/frontier";
  std::vector<std::string> runs;
  std::string baseline;
  std::optional<double> kl_slope;
  app.add_option("--out", out, "output directory (frontier.svg, frontier.md; paired.md with --baseline)");
  app.add_option("--baseline", baseline,
                 "also compare every other method with this one, run by run on the seeds both ran at the same "
                 "alpha and budget (paired.md)");
  app.add_option("--kl-slope", kl_slope,
                 "with --baseline: accuracy per nat of path KL, to compare accuracy at equal KL too (e.g. the "
                 "steepest slope of an alpha sweep)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("runs", runs, "METHOD=DIR: a finished seiko_demo run (DIR/metrics.json) and the method it stands for")
      ->required();
  if (const auto code = examples::parse_flags(app, argc, argv)) return *code;
  try {
    require(!kl_slope || !baseline.empty(), "--kl-slope compares with a --baseline: name one");
    std::vector<Group> groups;
    for (const std::string& run : runs) {
      const auto equals = run.find('=');
      require(equals != std::string::npos && equals > 0 && equals + 1 < run.size(), "\"", run,
              "\": expected METHOD=DIR");
      const std::string method = run.substr(0, equals);
      const std::filesystem::path dir = run.substr(equals + 1);
      const nlohmann::json metrics = examples::read_json(dir / "metrics.json");
      // DDPO's objective is the reward alone: its runs record an alpha they do not use.
      const double alpha = metrics.value("variant", "") == "ddpo" ? std::nan("") : metrics.at("alpha").get<double>();
      const int64_t labels = metrics.at("queries_total").get<int64_t>();
      Group run_group{method, alpha, labels, {}, {}, {}};
      auto group = std::find_if(groups.begin(), groups.end(),
                                [&](const Group& g) { return g.method == method && same_setting(g, run_group); });
      if (group == groups.end()) group = groups.insert(groups.end(), std::move(run_group));
      group->runs.push_back(dir.string());
      group->seeds.push_back(metrics.contains("seed") ? std::optional(metrics.at("seed").get<int64_t>())
                                                      : std::nullopt);
      for (const auto& [key, name] : kFigures) {
        require(metrics.contains(key), (dir / "metrics.json").string(), ": no \"", key,
                "\" (a run of an older seiko_demo, or not a final evaluation)");
        group->figures[key].push_back(metrics.at(key).get<double>());
      }
    }
    // By alpha (a method without one first), the order of each method's curve.
    std::stable_sort(groups.begin(), groups.end(), [](const Group& a, const Group& b) {
      return std::isnan(a.alpha) ? !std::isnan(b.alpha) : !std::isnan(b.alpha) && a.alpha < b.alpha;
    });

    std::ostringstream table;
    table << "| method | alpha | oracle labels | runs |";
    for (const auto& [key, name] : kFigures) table << " " << name << " |";
    table << "\n|---|---|---|---|";
    for (std::size_t i = 0; i < kFigures.size(); ++i) table << "---|";
    table << "\n";
    std::vector<std::string> methods;
    for (const Group& g : groups) {
      if (std::find(methods.begin(), methods.end(), g.method) == methods.end()) methods.push_back(g.method);
      table << "| " << g.method << " | " << alpha_text(g.alpha) << " | " << g.labels << " | " << g.runs.size() << " |";
      for (const auto& [key, name] : kFigures)
        table << " " << format(estimate(g.figures.at(key)), decimals(key)) << " |";
      table << "\n";
    }
    table << "\nMean +- 95% t-interval over the runs of a row (one run: its figures).\n";

    // A panel per figure against the path KL; a series per method, its points in the
    // order of alpha, named by it (and by their labels where the runs' budgets differ).
    std::vector<int64_t> all_labels;
    for (const Group& g : groups) all_labels.push_back(g.labels);
    const auto budgets = std::set<int64_t>(all_labels.begin(), all_labels.end()).size();
    const auto panel = [&](const std::string& key, const std::string& title) {
      io::ChartPanel p{.title = title, .x_label = "path KL to the pretrained model (nats)", .log_x = true};
      for (const std::string& method : methods) {
        io::ChartSeries s{.name = method};
        for (const Group& g : groups) {
          if (g.method != method) continue;
          const Estimate kl = estimate(g.figures.at("kl_to_pretrained")), y = estimate(g.figures.at(key));
          s.x.push_back(kl.mean);
          s.x_err.push_back(kl.half_width);
          s.y.push_back(y.mean);
          s.y_err.push_back(y.half_width);
          const std::string budget = budgets > 1 ? std::to_string(g.labels) + " labels" : "";
          s.labels.push_back(std::isnan(g.alpha) ? budget
                                                 : "α " + alpha_text(g.alpha) + (budget.empty() ? "" : ", " + budget));
        }
        p.series.push_back(std::move(s));
      }
      return p;
    };
    std::vector<io::ChartPanel> panels{panel("oracle_accuracy", "oracle accuracy of the prompt"),
                                       panel("diversity", "diversity within a prompt (real images: 1)"),
                                       panel("class_fd", "class Frechet distance")};
    panels[1].y_marks = {1.0};
    panels[1].y_mark_labels = {"real images"};
    io::write_text(std::filesystem::path(out) / "frontier.svg",
                   io::svg_chart(panels, {.panel_width = 420, .panel_height = 320, .legend_width = 170}));
    io::write_text(std::filesystem::path(out) / "frontier.md", table.str());
    std::cout << table.str() << "seiko_frontier: " << (std::filesystem::path(out) / "frontier.svg").string() << ", "
              << (std::filesystem::path(out) / "frontier.md").string() << "\n";
    if (!baseline.empty()) {
      const Paired paired = paired_comparison(groups, baseline, kl_slope);
      io::write_text(std::filesystem::path(out) / "paired.md", paired.table);
      io::write_text(std::filesystem::path(out) / "paired.svg",
                     io::svg_chart(paired.panels, {.panel_width = 420, .panel_height = 320, .legend_width = 220}));
      std::cout << "\n"
                << paired.table << "seiko_frontier: " << (std::filesystem::path(out) / "paired.md").string() << ", "
                << (std::filesystem::path(out) / "paired.svg").string() << "\n";
    }
    return 0;
  } catch (const std::exception& error) {
    std::cerr << "seiko_frontier: " << error.what() << "\n";
    return 1;
  }
}
