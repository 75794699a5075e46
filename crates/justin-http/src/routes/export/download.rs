//! `GET /api/v1/export`: every decision with what was uploaded for it, as CSV, streamed.

use std::io::{self, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::web::{self, Bytes};
use actix_web::HttpResponse;
use tokio::sync::mpsc;

use crate::api_types::responses::{InternalError, Unauthorized, Unavailable};
use crate::api_types::ErrorResponse;
use crate::blocking::run_blocking;
use crate::error::ApiError;
use crate::export;
use crate::state::AppState;

/// Bytes gathered before a chunk goes to the client.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks that may wait for a slow client; the export reads no further ahead than this.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Lets one export run at a time: each holds a database connection for as long as it runs,
/// and the decisions of the study must not wait for a second one.
#[derive(Debug, Clone, Default)]
pub struct ExportSlot(Arc<AtomicBool>);

impl ExportSlot {
    fn take(&self) -> Option<SlotGuard> {
        self.0
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| SlotGuard(Arc::clone(&self.0)))
    }
}

/// Frees the slot when the export ends, however it ends.
struct SlotGuard(Arc<AtomicBool>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Writes into chunks handed to the response; fails once the client has gone.
struct ChunkWriter {
    buffer: Vec<u8>,
    sender: mpsc::Sender<io::Result<Bytes>>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK_BYTES + 4096),
        ));
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// The response body: the chunks the export thread sends.
struct ChunkStream(mpsc::Receiver<io::Result<Bytes>>);

impl futures_core::Stream for ChunkStream {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().0.poll_recv(cx)
    }
}

/// Download the analysis table.
///
/// One CSV row per stored decision, in the order they were made, with the study data uploaded
/// for it; the columns are listed in `docs/api.md`. The table is streamed as it is read, from
/// one consistent snapshot of the study. A failure part-way ends the transfer without its
/// final chunk, so a client never takes a cut table for a whole one. One export runs at a
/// time.
///
/// # Errors
/// 409 while another export runs, 503 when the database is unavailable.
#[utoipa::path(
    get,
    path = "/api/v1/export",
    operation_id = "export",
    tag = "analysis",
    responses(
        (status = 200, description = "The table, `text/csv`: a header line, then one row per decision.", content_type = "text/csv", body = String),
        (status = 401, response = Unauthorized),
        (status = 409, description = "Another export is running (`An export is already running; try again when it ends.`).", body = ErrorResponse),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn handle(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let slot = state.exports.take().ok_or_else(|| {
        ApiError::Conflict("An export is already running; try again when it ends.".into())
    })?;
    let service = state.service.clone();
    // Opened before answering, so an unreachable database is a 503, not a cut-off 200.
    let rows = run_blocking(move || service.export_lines()).await?;
    let (sender, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
    std::thread::Builder::new()
        .name("justin-export".into())
        .spawn(move || {
            let _slot = slot;
            let mut out = ChunkWriter {
                buffer: Vec::with_capacity(CHUNK_BYTES + 4096),
                sender: sender.clone(),
            };
            match export::write_all(&mut out, rows) {
                Ok(written) => log::info!("export sent {written} decisions"),
                Err(export::ExportError::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
                    log::info!("export stopped: the client went away");
                }
                Err(e) => {
                    log::error!("export failed: {}", justin_core::service::error_chain(&e));
                    // An error item makes the server drop the connection mid-body.
                    let _ = sender.blocking_send(Err(io::Error::other("export failed")));
                }
            }
        })
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            "Content-Disposition",
            "attachment; filename=\"justin-export.csv\"",
        ))
        .streaming(ChunkStream(receiver)))
}
