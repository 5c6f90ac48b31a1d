//! W3C trace-context propagation (feature `otel`): the innermost layer writes `traceparent`
//! (and `tracestate`) for the current span — the attempt's `request` span — into every
//! request, using the globally installed OpenTelemetry propagator. Without a propagator
//! installed by the application, nothing is written.

use http::Extensions;
use opentelemetry::propagation::Injector;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next, Result};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Injects the current span's context into outgoing requests.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PropagateContext;

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[async_trait::async_trait]
impl Middleware for PropagateContext {
    async fn handle(
        &self,
        mut req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response> {
        let context = tracing::Span::current().context();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut HeaderInjector(req.headers_mut()));
        });
        next.run(req, extensions).await
    }
}
