//! Request bodies the api answered without reading to the end (a 413 over the body limit, a 415,
//! a 401 before the body was looked at): the rest is read and thrown away, bounded in bytes and
//! time, before the answer goes out. Otherwise the server closes the connection while the
//! client is still writing, and the client sees a reset or a broken pipe instead of the JSON
//! error (hyper closes a connection whose request body was left unread). A body too large to
//! drain, or one a client holds back (`Expect: 100-continue` that was never continued), is not
//! read: the answer then says `Connection: close`, so no client reuses that connection.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::{Body, Bytes, HttpBody},
    extract::Request,
    http::{HeaderValue, header},
    middleware::Next,
    response::Response,
};
use http_body::{Frame, SizeHint};

/// Most bytes read and discarded after the answer is known: a few times the default body limit.
pub const MAX_DRAIN_BYTES: u64 = 1 << 20;
/// Longest time spent draining one request's body.
pub const MAX_DRAIN_TIME: Duration = Duration::from_secs(5);

/// The middleware: hands the handler a body whose unread rest stays reachable, and drains it
/// once the handler has answered.
pub async fn drain_unread_body(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let awaits_continue = parts
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let shared = SharedBody::new(body);
    let mut response = next.run(Request::from_parts(parts, Body::new(shared.clone()))).await;
    let Some(rest) = shared.take_unfinished() else { return response };
    let polled = shared.was_polled();
    let drained = if (awaits_continue && !polled)
        || declared.is_some_and(|length| length > MAX_DRAIN_BYTES)
    {
        false
    } else {
        tokio::time::timeout(MAX_DRAIN_TIME, drain(rest, MAX_DRAIN_BYTES)).await.unwrap_or(false)
    };
    if !drained {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Reads `body` to its end, discarding it; `false` if that would take more than `budget` bytes
/// or the body fails.
async fn drain(mut body: Body, budget: u64) -> bool {
    let mut read = 0u64;
    loop {
        match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            None => return true,
            Some(Err(_)) => return false,
            Some(Ok(frame)) => {
                read += frame.data_ref().map_or(0, |data| data.len() as u64);
                if read > budget {
                    return false;
                }
            }
        }
    }
}

/// The request body, shared between the handler (which may drop its handle half-read) and the
/// middleware (which drains what is left).
#[derive(Clone)]
struct SharedBody(Arc<Mutex<Inner>>);

struct Inner {
    body: Option<Body>,
    polled: bool,
    finished: bool,
}

impl SharedBody {
    fn new(body: Body) -> Self {
        let finished = body.is_end_stream();
        SharedBody(Arc::new(Mutex::new(Inner { body: Some(body), polled: false, finished })))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a handler panicked mid-read; the body is still usable.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The body, unless it was read to the end.
    fn take_unfinished(&self) -> Option<Body> {
        let mut inner = self.lock();
        if inner.finished { None } else { inner.body.take() }
    }

    fn was_polled(&self) -> bool {
        self.lock().polled
    }
}

impl HttpBody for SharedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut inner = self.lock();
        inner.polled = true;
        let Some(body) = inner.body.as_mut() else { return Poll::Ready(None) };
        let polled = Pin::new(body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => inner.finished = true,
            Poll::Ready(Some(Ok(_))) => {
                inner.finished = inner.body.as_ref().is_some_and(HttpBody::is_end_stream)
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let inner = self.lock();
        inner.finished || inner.body.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.lock().body.as_ref().map(HttpBody::size_hint).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{Router, http::StatusCode, routing::post};
    use tower::ServiceExt;

    /// A handler that reads at most `n` bytes of the body, then answers 413.
    async fn call(body: Body, headers: &[(&str, &str)], read: usize) -> Response {
        let app = Router::new()
            .route(
                "/",
                post(move |request: Request| async move {
                    let _ = axum::body::to_bytes(request.into_body(), read).await;
                    StatusCode::PAYLOAD_TOO_LARGE
                }),
            )
            .layer(axum::middleware::from_fn(drain_unread_body));
        let mut request = axum::http::Request::post("/");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        app.oneshot(request.body(body).unwrap()).await.unwrap()
    }

    fn stream_of(chunks: usize, size: usize) -> (Body, Arc<std::sync::atomic::AtomicUsize>) {
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = sent.clone();
        let stream = futures::stream::iter((0..chunks).map(move |_| {
            counter.fetch_add(size, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; size]))
        }));
        (Body::from_stream(stream), sent)
    }

    #[tokio::test]
    async fn an_unread_rest_is_drained_and_the_connection_stays_usable() {
        let (body, sent) = stream_of(40, 8 * 1024); // 320 KiB, the handler reads 16 KiB
        let response = call(body, &[], 16 * 1024).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), 40 * 8 * 1024, "all read");
        assert!(response.headers().get(header::CONNECTION).is_none());
    }

    #[tokio::test]
    async fn a_body_over_the_drain_budget_is_left_and_the_connection_closed() {
        let chunks = (MAX_DRAIN_BYTES as usize) / (64 * 1024) + 4;
        let (body, sent) = stream_of(chunks, 64 * 1024);
        let response = call(body, &[], 1024).await;
        assert_eq!(response.headers()[header::CONNECTION], "close");
        assert!(sent.load(std::sync::atomic::Ordering::SeqCst) < chunks * 64 * 1024);

        let declared = (MAX_DRAIN_BYTES + 1).to_string();
        let (body, sent) = stream_of(4, 1024);
        let response = refuse_unread(body, ("content-length", declared.as_str())).await;
        assert_eq!(response.headers()[header::CONNECTION], "close");
        assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), 0, "not read at all");
    }

    /// A handler that answers 413 without looking at the body.
    async fn refuse_unread(body: Body, header: (&str, &str)) -> Response {
        let app = Router::new()
            .route("/", post(|| async { StatusCode::PAYLOAD_TOO_LARGE }))
            .layer(axum::middleware::from_fn(drain_unread_body));
        let request = axum::http::Request::post("/").header(header.0, header.1).body(body).unwrap();
        app.oneshot(request).await.unwrap()
    }

    #[tokio::test]
    async fn a_body_held_back_for_100_continue_is_not_asked_for() {
        let (body, sent) = stream_of(4, 1024);
        let response = refuse_unread(body, ("expect", "100-continue")).await;
        assert_eq!(response.headers()[header::CONNECTION], "close");
        assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), 0);

        // Without the expectation the same unread body is drained.
        let (body, sent) = stream_of(4, 1024);
        let response = refuse_unread(body, ("x-other", "1")).await;
        assert!(response.headers().get(header::CONNECTION).is_none());
        assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), 4 * 1024);
    }

    #[tokio::test]
    async fn a_body_read_to_the_end_is_left_alone() {
        let response = call(Body::from("{}"), &[], 1024).await;
        assert!(response.headers().get(header::CONNECTION).is_none());
    }
}
