// Spans: W3C-style trace and span ids, attributes, events and status; finished spans go to a sink
// (the OTLP exporter's bounded queue). Ending a span never blocks on the network.
#pragma once

#include "util/clock.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <variant>
#include <vector>

namespace nbu::telemetry {

using AttributeValue = std::variant<std::string, int64_t, double, bool>;
using SpanAttributes = std::vector<std::pair<std::string, AttributeValue>>;

struct SpanContext {
  std::string trace_id;  // 32 lower-case hex chars
  std::string span_id;   // 16 lower-case hex chars
  bool valid() const { return trace_id.size() == 32 && span_id.size() == 16; }
};

// OTLP span kinds (the numeric values are the OTLP enum values).
enum class SpanKind { kInternal = 1, kServer = 2, kClient = 3, kProducer = 4, kConsumer = 5 };

// The most events a span keeps, OpenTelemetry's default (SpanLimits): a file's root span gets one
// per failed try and may live for days. Later ones are counted in SpanData::dropped_events.
constexpr size_t kMaxSpanEvents = 128;

struct SpanEvent {
  std::string name;
  WallTime time;
  SpanAttributes attributes;
};

struct SpanData {
  SpanContext context;
  std::string parent_span_id;  // empty for a root span
  std::string name;
  SpanKind kind = SpanKind::kInternal;
  WallTime start;
  WallTime end;
  SpanAttributes attributes;
  std::vector<SpanEvent> events;  // the first kMaxSpanEvents added
  uint32_t dropped_events = 0;    // added beyond kMaxSpanEvents (saturates)
  bool error = false;
  std::string status_message;
};

using SpanSink = std::function<void(SpanData&&)>;

class Tracer;

// A started span; ends (and is handed to the sink) on End() or destruction. Move-only.
class Span {
 public:
  Span() = default;
  Span(Span&& other) noexcept;
  Span& operator=(Span&& other) noexcept;
  Span(const Span&) = delete;
  Span& operator=(const Span&) = delete;
  ~Span();

  void SetAttribute(const std::string& key, AttributeValue value);
  // Keeps the first kMaxSpanEvents events, as OpenTelemetry SDKs do; later ones are only counted.
  void AddEvent(const std::string& name, SpanAttributes attributes = {});
  void SetError(const std::string& message);
  void End();
  const SpanContext& context() const;
  bool recording() const { return data_ != nullptr; }

 private:
  friend class Tracer;
  Span(const Tracer* tracer, std::unique_ptr<SpanData> data)
      : tracer_(tracer), data_(std::move(data)) {}
  const Tracer* tracer_ = nullptr;
  std::unique_ptr<SpanData> data_;
};

// Thread-safe. With no sink, spans still get ids (so logs carry trace ids) but go nowhere.
class Tracer {
 public:
  explicit Tracer(Clock& clock, SpanSink sink = nullptr) : clock_(clock), sink_(std::move(sink)) {}
  // Starts a span; a valid `parent` makes it a child in the parent's trace. Never blocks.
  Span StartSpan(const std::string& name, const SpanContext* parent = nullptr,
                 SpanKind kind = SpanKind::kInternal) const;
  // Hands a finished span to the sink (if any). Must not block: the sink is a bounded queue.
  void Finish(SpanData&& data) const;
  WallTime Now() const { return clock_.WallNow(); }

 private:
  Clock& clock_;
  SpanSink sink_;
};

std::string NewTraceId();
std::string NewSpanId();

}  // namespace nbu::telemetry
