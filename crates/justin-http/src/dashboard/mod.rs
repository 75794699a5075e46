//! The study dashboard at `/dashboard`: pages rendered by the service, charts drawn as SVG.
//!
//! (Being built for issue 17.)
