// Reward against KL across finished seiko_demo runs: each run's final evaluation
// (metrics.json) becomes a point, runs of one method at one alpha and one budget of
// oracle labels (over seeds) one point with 95% t-intervals, and a method's alphas
// one curve. Writes into --out:
//
//   frontier.svg  oracle accuracy, diversity and class FD against the path KL to
//                 the pretrained model, a curve per method, each point named by alpha
//   frontier.md   the same figures as a Markdown table (also printed)
//
//   build/examples/seiko_frontier --out out/frontier
//     SEIKO=out/sm_s0 SEIKO=out/sm_s1 SEIKO=out/sm_a0.1_s0 greedy=out/greedy_s0 DDPO=out/ddpo_s0

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
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
#include "json_file.hpp"

using namespace diffctl;

namespace {

// The final figures that the frontier compares, as metrics.json names them.
const std::vector<std::pair<std::string, std::string>> kFigures{{"oracle_accuracy", "accuracy"},
                                                                {"oracle_probability", "p(z|x)"},
                                                                {"diversity", "diversity"},
                                                                {"class_fd", "class FD"},
                                                                {"kl_to_pretrained", "path KL (nats)"}};

struct Estimate {
  double mean = 0.0, half_width = 0.0;  // half_width: 95% t-interval (0 for one run)
};

// The 97.5% quantile of Student's t with n - 1 degrees of freedom.
double t_quantile(std::size_t n) {
  static const double table[] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228};
  return n - 2 < std::size(table) ? table[n - 2] : 1.96;
}

Estimate estimate(const std::vector<double>& values) {
  Estimate e;
  for (const double v : values) e.mean += v / double(values.size());
  if (values.size() < 2) return e;
  double squares = 0.0;
  for (const double v : values) squares += (v - e.mean) * (v - e.mean);
  e.half_width = t_quantile(values.size()) * std::sqrt(squares / double(values.size() - 1) / double(values.size()));
  return e;
}

// One method at one alpha and one budget of oracle labels: its runs' figures.
struct Group {
  std::string method;
  double alpha;  // NaN: a method without alpha (DDPO)
  int64_t labels;
  std::vector<std::string> runs;
  std::map<std::string, std::vector<double>> figures;
};

std::string format(const Estimate& e, int decimals) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(decimals) << e.mean;
  if (e.half_width > 0) out << " +- " << e.half_width;
  return out.str();
}

std::string alpha_text(double alpha) {
  if (std::isnan(alpha)) return "-";
  std::ostringstream out;
  out << alpha;
  return out.str();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Reward against KL across finished seiko_demo runs, a curve per method over alpha"};
  std::string out = "out/frontier";
  std::vector<std::string> runs;
  app.add_option("--out", out, "output directory (frontier.svg, frontier.md)");
  app.add_option("runs", runs, "METHOD=DIR: a finished seiko_demo run (DIR/metrics.json) and the method it stands for")
      ->required();
  if (const auto code = examples::parse_flags(app, argc, argv)) return *code;
  try {
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
      auto group = std::find_if(groups.begin(), groups.end(), [&](const Group& g) {
        return g.method == method && (g.alpha == alpha || (std::isnan(g.alpha) && std::isnan(alpha))) &&
               g.labels == labels;
      });
      if (group == groups.end()) group = groups.insert(groups.end(), Group{method, alpha, labels, {}, {}});
      group->runs.push_back(dir.string());
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
        table << " " << format(estimate(g.figures.at(key)), key == "class_fd" || key == "kl_to_pretrained" ? 1 : 3)
              << " |";
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
    return 0;
  } catch (const std::exception& error) {
    std::cerr << "seiko_frontier: " << error.what() << "\n";
    return 1;
  }
}
