#include "telemetry/tracing.h"

#include "util/crypto.h"

#include <limits>

namespace nbu::telemetry {

std::string NewTraceId() { return FastRandomHex(16); }
std::string NewSpanId() { return FastRandomHex(8); }

Span::Span(Span&& other) noexcept : tracer_(other.tracer_), data_(std::move(other.data_)) {}

Span& Span::operator=(Span&& other) noexcept {
  if (this != &other) {
    End();
    tracer_ = other.tracer_;
    data_ = std::move(other.data_);
  }
  return *this;
}

Span::~Span() { End(); }

void Span::SetAttribute(const std::string& key, AttributeValue value) {
  if (data_) data_->attributes.emplace_back(key, std::move(value));
}

void Span::AddEvent(const std::string& name, SpanAttributes attributes) {
  if (!data_) return;
  if (data_->events.size() < kMaxSpanEvents) {
    data_->events.push_back({name, tracer_->Now(), std::move(attributes)});
  } else if (data_->dropped_events < std::numeric_limits<uint32_t>::max()) {
    ++data_->dropped_events;
  }
}

void Span::SetError(const std::string& message) {
  if (!data_) return;
  data_->error = true;
  data_->status_message = message;
}

void Span::End() {
  if (!data_) return;
  data_->end = tracer_->Now();
  tracer_->Finish(std::move(*data_));
  data_.reset();
}

const SpanContext& Span::context() const {
  static const SpanContext kEmpty;
  return data_ ? data_->context : kEmpty;
}

Span Tracer::StartSpan(const std::string& name, const SpanContext* parent, SpanKind kind) const {
  auto data = std::make_unique<SpanData>();
  data->name = name;
  data->kind = kind;
  data->start = clock_.WallNow();
  if (parent != nullptr && parent->valid()) {
    data->context.trace_id = parent->trace_id;
    data->parent_span_id = parent->span_id;
  } else {
    data->context.trace_id = NewTraceId();
  }
  data->context.span_id = NewSpanId();
  return Span(this, std::move(data));
}

void Tracer::Finish(SpanData&& data) const {
  if (sink_) sink_(std::move(data));
}

}  // namespace nbu::telemetry
