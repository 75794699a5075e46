//! Middleware counting every request into [`Metrics`]: by method, matched route pattern (never
//! the path sent, which can name a participant) and status, with its latency up to the
//! response's head. Without metrics (`[metrics] enabled = false`) it only passes the request
//! on.

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

use crate::metrics::Metrics;

/// Counts the request and its answer, a 401 or a 413 from an inner middleware included.
///
/// # Errors
/// Only those of the inner service, counted with their status first.
pub async fn count_request<B: MessageBody>(
    metrics: Option<Arc<Metrics>>,
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    let Some(metrics) = metrics else {
        return next.call(req).await;
    };
    let started = Instant::now();
    let method = req.method().clone();
    let route = req.match_pattern().unwrap_or_default();
    let answered = next.call(req).await;
    let status = match &answered {
        Ok(res) => res.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    metrics.request(&method, &route, status.as_u16(), started.elapsed());
    answered
}
