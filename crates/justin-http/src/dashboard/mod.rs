//! The study dashboard at `/dashboard`: pages rendered by the service as HTML, charts drawn as
//! inline SVG, one inline stylesheet, no script and nothing fetched from elsewhere (see
//! docs/operations.md, "Dashboard"). The handlers are in `routes/dashboard/`; this module
//! turns what the core answers into pages.

pub mod html;
pub mod overview;
pub mod participants;
pub mod svg;
pub mod updates;
