#pragma once
// Charts of figures as SVG: panels of series (lines, markers, error bars, point
// labels) with ticked, labelled axes and a legend, side by side in one file that
// any browser or Markdown viewer shows. A run's rounds (reward, KL, diversity
// per round) and a frontier of runs (reward against KL) are drawn with it; no
// LibTorch inside, so a tool that only reads results stays light.
//
//   io::ChartPanel panel{.title = "oracle accuracy", .x_label = "labels", .y_label = "accuracy"};
//   panel.series.push_back({.name = "SEIKO", .x = {0, 128, 384}, .y = {0.1, 0.3, 0.7}});
//   io::write_text(out / "rounds.svg", io::svg_chart({panel}));

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "diffctl/error.hpp"

namespace diffctl::io {

struct ChartSeries {
  std::string name{};                    // the legend's entry ("": none)
  std::vector<double> x{}, y{};          // non-finite points are left out (a figure not measured)
  std::vector<double> x_err{}, y_err{};  // half-widths of error bars: empty, or one per point
  std::vector<std::string> labels{};     // text beside each point: empty, or one per point
  bool lines = true;                     // join the points in their order
};

struct ChartPanel {
  std::string title{}, x_label{}, y_label{};
  std::vector<ChartSeries> series{};
  // Dashed horizontal lines at these values (a target, a reference), with a label each.
  std::vector<double> y_marks{};
  std::vector<std::string> y_mark_labels{};
  // The x axis on a log scale (for x > 0 spanning decades, such as a KL across
  // methods): ticks at 1, 2 and 5 times powers of ten.
  bool log_x = false;
};

struct ChartLayout {
  int panel_width = 380, panel_height = 280;
  int columns = 0;  // panels per row (0: all in one row)
  // > 0: one legend, the first panel's series, in a column of this width right of
  // the panels (for panels that share their series); 0: each panel's own, inside it.
  int legend_width = 0;
};

namespace detail {

inline std::string svg_escape(const std::string& text) {
  std::string out;
  for (const char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// Ticks at 1, 2 or 5 times a power of ten, about `target` of them over [lo, hi];
// the range widened to whole ticks.
struct Axis {
  double lo, hi, step;
};

inline Axis nice_axis(double lo, double hi, int target = 5) {
  if (!(hi > lo)) {  // one value (or none): a unit range around it
    const double centre = std::isfinite(lo) ? lo : 0.0;
    const double half = centre == 0.0 ? 1.0 : 0.1 * std::abs(centre);
    lo = centre - half;
    hi = centre + half;
  }
  const double raw = (hi - lo) / target;
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  double step = power;
  for (const double m : {1.0, 2.0, 5.0, 10.0})
    if (m * power >= raw) {
      step = m * power;
      break;
    }
  return {std::floor(lo / step + 1e-9) * step, std::ceil(hi / step - 1e-9) * step, step};
}

inline std::string tick_text(double value, double step) {
  std::ostringstream out;
  const int decimals = std::max(0, static_cast<int>(-std::floor(std::log10(step) + 1e-9)));
  out << std::fixed << std::setprecision(decimals) << (std::abs(value) < 0.5 * step ? 0.0 : value);
  return out.str();
}

inline std::string number(double v) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(1) << v;
  return out.str();
}

// Tableau's ten colours: distinct in print and for the common colour blindnesses.
inline constexpr std::array<const char*, 10> kPalette{"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                                      "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};

inline void check_series(const ChartPanel& panel, const ChartSeries& s) {
  const std::size_t n = s.x.size();
  require(s.y.size() == n, "svg_chart: panel \"", panel.title, "\", series \"", s.name, "\": ", n, " x values and ",
          s.y.size(), " y values");
  require(s.x_err.empty() || s.x_err.size() == n, "svg_chart: series \"", s.name, "\": x_err needs one per point");
  require(s.y_err.empty() || s.y_err.size() == n, "svg_chart: series \"", s.name, "\": y_err needs one per point");
  require(s.labels.empty() || s.labels.size() == n, "svg_chart: series \"", s.name, "\": labels need one per point");
}

inline void draw_panel(std::ostringstream& svg, const ChartPanel& panel, double left, double top,
                       const ChartLayout& layout) {
  require(panel.y_mark_labels.empty() || panel.y_mark_labels.size() == panel.y_marks.size(), "svg_chart: panel \"",
          panel.title, "\": y_mark_labels need one per mark");
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo, y_lo = x_lo, y_hi = -x_lo;
  const auto finite = [](const ChartSeries& s, std::size_t i) {
    return std::isfinite(s.x[i]) && std::isfinite(s.y[i]);
  };
  for (const auto& s : panel.series) {
    check_series(panel, s);
    for (std::size_t i = 0; i < s.x.size(); ++i) {
      if (!finite(s, i)) continue;
      const double dx = s.x_err.empty() || !std::isfinite(s.x_err[i]) ? 0.0 : s.x_err[i];
      const double dy = s.y_err.empty() || !std::isfinite(s.y_err[i]) ? 0.0 : s.y_err[i];
      x_lo = std::min(x_lo, s.x[i] - dx);
      x_hi = std::max(x_hi, s.x[i] + dx);
      y_lo = std::min(y_lo, s.y[i] - dy);
      y_hi = std::max(y_hi, s.y[i] + dy);
    }
  }
  for (const double m : panel.y_marks) {
    y_lo = std::min(y_lo, m);
    y_hi = std::max(y_hi, m);
  }
  // Figures that cannot be negative (a KL, a distance) keep their axis at 0 and
  // above, however wide an interval of few runs is; the bars are cut at the frame.
  bool x_positive = true, y_positive = true;
  for (const auto& s : panel.series)
    for (std::size_t i = 0; i < s.x.size(); ++i)
      if (finite(s, i)) {
        x_positive = x_positive && s.x[i] >= 0;
        y_positive = y_positive && s.y[i] >= 0;
      }
  const Axis ay = nice_axis(y_positive ? std::max(0.0, y_lo) : y_lo, y_hi);
  // x's ticks (in data units), and where x maps to in [0, 1] of the axis.
  std::vector<double> x_ticks;
  std::vector<std::string> x_tick_texts;
  double x_from = 0, x_to = 1;
  const auto fx = [&](double x) { return panel.log_x ? std::log10(std::max(x, 1e-300)) : x; };
  if (panel.log_x) {
    double smallest = std::numeric_limits<double>::infinity();
    for (const auto& s : panel.series)
      for (std::size_t i = 0; i < s.x.size(); ++i)
        if (finite(s, i)) {
          require(s.x[i] > 0, "svg_chart: panel \"", panel.title, "\": a log x axis needs x > 0, found ", s.x[i]);
          smallest = std::min(smallest, s.x[i]);
        }
    x_from = std::floor(std::log10(std::isfinite(smallest) ? smallest : 1.0) + 1e-9);
    x_to = std::max(x_from + 1, std::ceil(std::log10(std::max(x_hi, smallest)) - 1e-9));
    for (double decade = x_from; decade < x_to + 0.5; ++decade)
      for (const double m : {1.0, 2.0, 5.0})
        if (decade + std::log10(m) <= x_to + 1e-9) {
          x_ticks.push_back(m * std::pow(10.0, decade));
          x_tick_texts.push_back(tick_text(x_ticks.back(), std::min(1.0, std::pow(10.0, decade))));
        }
  } else {
    const Axis ax = nice_axis(x_positive ? std::max(0.0, x_lo) : x_lo, x_hi);
    x_from = ax.lo;
    x_to = ax.hi;
    for (double t = ax.lo; t <= ax.hi + 0.5 * ax.step; t += ax.step) {
      x_ticks.push_back(t);
      x_tick_texts.push_back(tick_text(t, ax.step));
    }
  }
  // The plotting area inside the panel: room for the title, the tick labels and the axis labels.
  const double px = left + 62, py = top + 30, pw = layout.panel_width - 80, ph = layout.panel_height - 78;
  const auto sx = [&](double x) { return px + (std::clamp(fx(x), x_from, x_to) - x_from) / (x_to - x_from) * pw; };
  const auto sy = [&](double y) { return py + ph - (std::clamp(y, ay.lo, ay.hi) - ay.lo) / (ay.hi - ay.lo) * ph; };

  svg << "<text x=\"" << number(left + layout.panel_width / 2.0) << "\" y=\"" << number(top + 18)
      << "\" text-anchor=\"middle\" font-weight=\"bold\">" << svg_escape(panel.title) << "</text>\n";
  svg << "<rect x=\"" << number(px) << "\" y=\"" << number(py) << "\" width=\"" << number(pw) << "\" height=\""
      << number(ph) << "\" fill=\"none\" stroke=\"#444\"/>\n";
  for (std::size_t i = 0; i < x_ticks.size(); ++i) {
    const double x = sx(x_ticks[i]);
    svg << "<line x1=\"" << number(x) << "\" y1=\"" << number(py) << "\" x2=\"" << number(x) << "\" y2=\""
        << number(py + ph) << "\" stroke=\"#eee\"/>\n";
    svg << "<text x=\"" << number(x) << "\" y=\"" << number(py + ph + 14) << "\" text-anchor=\"middle\">"
        << x_tick_texts[i] << "</text>\n";
  }
  for (double t = ay.lo; t <= ay.hi + 0.5 * ay.step; t += ay.step) {
    svg << "<line x1=\"" << number(px) << "\" y1=\"" << number(sy(t)) << "\" x2=\"" << number(px + pw) << "\" y2=\""
        << number(sy(t)) << "\" stroke=\"#eee\"/>\n";
    svg << "<text x=\"" << number(px - 5) << "\" y=\"" << number(sy(t) + 4) << "\" text-anchor=\"end\">"
        << tick_text(t, ay.step) << "</text>\n";
  }
  svg << "<text x=\"" << number(px + pw / 2) << "\" y=\"" << number(py + ph + 32) << "\" text-anchor=\"middle\">"
      << svg_escape(panel.x_label) << "</text>\n";
  svg << "<text transform=\"translate(" << number(left + 14) << "," << number(py + ph / 2)
      << ") rotate(-90)\" text-anchor=\"middle\">" << svg_escape(panel.y_label) << "</text>\n";
  for (std::size_t m = 0; m < panel.y_marks.size(); ++m) {
    const double y = sy(panel.y_marks[m]);
    svg << "<line x1=\"" << number(px) << "\" y1=\"" << number(y) << "\" x2=\"" << number(px + pw) << "\" y2=\""
        << number(y) << "\" stroke=\"#888\" stroke-dasharray=\"5,4\"/>\n";
    if (!panel.y_mark_labels.empty())
      svg << "<text x=\"" << number(px + pw - 4) << "\" y=\"" << number(y - 4)
          << "\" text-anchor=\"end\" fill=\"#666\">" << svg_escape(panel.y_mark_labels[m]) << "</text>\n";
  }
  int legend_row = 0;
  for (std::size_t k = 0; k < panel.series.size(); ++k) {
    const ChartSeries& s = panel.series[k];
    const char* colour = kPalette[k % kPalette.size()];
    std::string path;
    for (std::size_t i = 0; i < s.x.size(); ++i) {
      if (!finite(s, i)) continue;
      const double x = sx(s.x[i]), y = sy(s.y[i]);
      path += (path.empty() ? "M" : " L") + number(x) + " " + number(y);
      if (!s.y_err.empty() && std::isfinite(s.y_err[i]) && s.y_err[i] > 0)
        svg << "<line x1=\"" << number(x) << "\" y1=\"" << number(sy(s.y[i] - s.y_err[i])) << "\" x2=\"" << number(x)
            << "\" y2=\"" << number(sy(s.y[i] + s.y_err[i])) << "\" stroke=\"" << colour << "\"/>\n";
      if (!s.x_err.empty() && std::isfinite(s.x_err[i]) && s.x_err[i] > 0)
        svg << "<line x1=\"" << number(sx(s.x[i] - s.x_err[i])) << "\" y1=\"" << number(y) << "\" x2=\""
            << number(sx(s.x[i] + s.x_err[i])) << "\" y2=\"" << number(y) << "\" stroke=\"" << colour << "\"/>\n";
      svg << "<circle cx=\"" << number(x) << "\" cy=\"" << number(y) << "\" r=\"3.5\" fill=\"" << colour << "\"/>\n";
      // A label near the right edge ends at its point instead of starting there.
      const bool right = x > px + 0.8 * pw;
      if (!s.labels.empty() && !s.labels[i].empty())
        svg << "<text x=\"" << number(right ? x - 6 : x + 6) << "\" y=\"" << number(y - 6) << "\" fill=\"" << colour
            << "\"" << (right ? " text-anchor=\"end\"" : "") << ">" << svg_escape(s.labels[i]) << "</text>\n";
    }
    if (s.lines && !path.empty())
      svg << "<path d=\"" << path << "\" fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"1.5\"/>\n";
    if (!s.name.empty() && layout.legend_width == 0) {
      const double ly = py + 12 + 14 * legend_row++;
      svg << "<rect x=\"" << number(px + 6) << "\" y=\"" << number(ly - 8) << "\" width=\"10\" height=\"10\" fill=\""
          << colour << "\"/>\n";
      svg << "<text x=\"" << number(px + 20) << "\" y=\"" << number(ly + 1) << "\">" << svg_escape(s.name)
          << "</text>\n";
    }
  }
}

}  // namespace detail

// The panels as one SVG document, `layout.columns` to a row.
inline std::string svg_chart(const std::vector<ChartPanel>& panels, const ChartLayout& layout = {}) {
  require(!panels.empty(), "svg_chart: no panels");
  require(layout.panel_width >= 160 && layout.panel_height >= 140, "svg_chart: panels of at least 160 x 140, found ",
          layout.panel_width, " x ", layout.panel_height);
  const int columns = layout.columns > 0 ? std::min<int>(layout.columns, int(panels.size())) : int(panels.size());
  const int rows = (int(panels.size()) + columns - 1) / columns;
  require(layout.legend_width >= 0, "svg_chart: legend_width must be >= 0, found ", layout.legend_width);
  const int width = columns * layout.panel_width;
  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width + layout.legend_width << "\" height=\""
      << rows * layout.panel_height << "\" font-family=\"sans-serif\" font-size=\"11\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  for (std::size_t p = 0; p < panels.size(); ++p)
    detail::draw_panel(svg, panels[p], double(int(p) % columns * layout.panel_width),
                       double(int(p) / columns * layout.panel_height), layout);
  if (layout.legend_width > 0) {
    int row = 0;
    for (std::size_t k = 0; k < panels.front().series.size(); ++k) {
      const std::string& name = panels.front().series[k].name;
      if (name.empty()) continue;
      const double y = 42 + 16 * row++;
      svg << "<rect x=\"" << width + 4 << "\" y=\"" << detail::number(y - 9) << "\" width=\"10\" height=\"10\" fill=\""
          << detail::kPalette[k % detail::kPalette.size()] << "\"/>\n";
      svg << "<text x=\"" << width + 18 << "\" y=\"" << detail::number(y) << "\">" << detail::svg_escape(name)
          << "</text>\n";
    }
  }
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace diffctl::io
