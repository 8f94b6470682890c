#include "telemetry/metrics.h"

#include <algorithm>

namespace nbu::telemetry {

void Counter::Add(double value, const Attributes& attrs) {
  std::lock_guard lock(mu_);
  series_[attrs] += value;
}

double Counter::Value(const Attributes& attrs) const {
  std::lock_guard lock(mu_);
  auto it = series_.find(attrs);
  return it == series_.end() ? 0 : it->second;
}

std::vector<std::pair<Attributes, double>> Counter::Series() const {
  std::lock_guard lock(mu_);
  return {series_.begin(), series_.end()};
}

void Histogram::Record(double value, const Attributes& attrs) {
  std::lock_guard lock(mu_);
  HistogramPoint& p = series_[attrs];
  if (p.counts.empty()) {
    p.bounds = bounds_;
    p.counts.assign(bounds_.size() + 1, 0);
    p.min = value;
    p.max = value;
  }
  const auto idx = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) -
                                       bounds_.begin());
  ++p.counts[idx];
  ++p.count;
  p.sum += value;
  p.min = std::min(p.min, value);
  p.max = std::max(p.max, value);
}

std::vector<std::pair<Attributes, HistogramPoint>> Histogram::Series() const {
  std::lock_guard lock(mu_);
  return {series_.begin(), series_.end()};
}

Counter& MetricsRegistry::AddCounter(const std::string& name, const std::string& description,
                                     const std::string& unit, bool up_down) {
  std::lock_guard lock(mu_);
  counters_.push_back(std::make_unique<Counter>(
      InstrumentInfo{name, description, unit,
                     up_down ? InstrumentKind::kUpDownCounter : InstrumentKind::kCounter}));
  return *counters_.back();
}

Histogram& MetricsRegistry::AddHistogram(const std::string& name, const std::string& description,
                                         const std::string& unit, std::vector<double> bounds) {
  std::lock_guard lock(mu_);
  histograms_.push_back(std::make_unique<Histogram>(
      InstrumentInfo{name, description, unit, InstrumentKind::kHistogram}, std::move(bounds)));
  return *histograms_.back();
}

void MetricsRegistry::AddGauge(const std::string& name, const std::string& description,
                               const std::string& unit, std::function<double()> read) {
  std::lock_guard lock(mu_);
  gauges_.push_back(Gauge{{name, description, unit, InstrumentKind::kGauge}, std::move(read)});
}

std::vector<const Counter*> MetricsRegistry::Counters() const {
  std::lock_guard lock(mu_);
  std::vector<const Counter*> out;
  for (const auto& c : counters_) out.push_back(c.get());
  return out;
}

std::vector<const Histogram*> MetricsRegistry::Histograms() const {
  std::lock_guard lock(mu_);
  std::vector<const Histogram*> out;
  for (const auto& h : histograms_) out.push_back(h.get());
  return out;
}

std::vector<Gauge> MetricsRegistry::Gauges() const {
  std::lock_guard lock(mu_);
  return gauges_;
}

}  // namespace nbu::telemetry
