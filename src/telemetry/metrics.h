// Metric instruments (counter, up-down counter, histogram, gauge) with attribute sets, in one
// registry that the Prometheus endpoint and the OTLP exporter both read.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace nbu::telemetry {

// Attribute set of one time series, e.g. {{"reason", "503"}}. Kept sorted by key.
using Attributes = std::map<std::string, std::string>;

enum class InstrumentKind { kCounter, kUpDownCounter, kHistogram, kGauge };

struct InstrumentInfo {
  std::string name;  // OpenTelemetry name, e.g. "files.processed"
  std::string description;
  std::string unit;  // UCUM, e.g. "s", "By", "1"
  InstrumentKind kind;
};

// Monotonic sum. Thread-safe; Add on an existing series takes one uncontended lock.
class Counter {
 public:
  explicit Counter(InstrumentInfo info) : info_(std::move(info)) {}
  void Add(double value = 1, const Attributes& attrs = {});
  double Value(const Attributes& attrs = {}) const;
  std::vector<std::pair<Attributes, double>> Series() const;
  const InstrumentInfo& info() const { return info_; }

 private:
  InstrumentInfo info_;
  mutable std::mutex mu_;
  std::map<Attributes, double> series_;  // guarded by mu_
};

struct HistogramPoint {
  std::vector<double> bounds;    // explicit upper bounds
  std::vector<uint64_t> counts;  // bounds.size() + 1 buckets
  uint64_t count = 0;
  double sum = 0;
  double min = 0;
  double max = 0;
};

class Histogram {
 public:
  Histogram(InstrumentInfo info, std::vector<double> bounds)
      : info_(std::move(info)), bounds_(std::move(bounds)) {}
  void Record(double value, const Attributes& attrs = {});
  std::vector<std::pair<Attributes, HistogramPoint>> Series() const;
  const InstrumentInfo& info() const { return info_; }

 private:
  InstrumentInfo info_;
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::map<Attributes, HistogramPoint> series_;  // guarded by mu_
};

// A value read when metrics are collected (queue depth, oldest pending age).
struct Gauge {
  InstrumentInfo info;
  std::function<double()> read;
};

// Owns every instrument; instruments live as long as the registry. Thread-safe.
class MetricsRegistry {
 public:
  Counter& AddCounter(const std::string& name, const std::string& description,
                      const std::string& unit, bool up_down = false);
  Histogram& AddHistogram(const std::string& name, const std::string& description,
                          const std::string& unit, std::vector<double> bounds);
  void AddGauge(const std::string& name, const std::string& description, const std::string& unit,
                std::function<double()> read);

  std::vector<const Counter*> Counters() const;
  std::vector<const Histogram*> Histograms() const;
  std::vector<Gauge> Gauges() const;

 private:
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Counter>> counters_;      // guarded by mu_
  std::vector<std::unique_ptr<Histogram>> histograms_;  // guarded by mu_
  std::vector<Gauge> gauges_;                           // guarded by mu_
};

}  // namespace nbu::telemetry
