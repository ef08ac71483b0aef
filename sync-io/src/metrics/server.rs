//! The HTTP endpoint: a small hyper server that answers `GET /metrics` by
//! asking the driver loop for a fresh rendering (the driver owns the
//! engine, so the server never touches it). See [`super`] for what it
//! serves and how.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

/// Content type of the Prometheus text format, used by default.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Content type of the OpenMetrics text format, used when the scraper asks
/// for it.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long a scrape waits for the driver's rendering before answering 503.
pub const DRIVER_TIMEOUT: Duration = Duration::from_secs(5);

/// Concurrent scrape connections; more are closed at once.
const MAX_CONNECTIONS: usize = 64;

/// A client must send its request head within this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the metrics endpoint on `addr` until `shutdown` becomes true (or
/// its sender is dropped). Each scrape sends a oneshot sender through
/// `requests`; the driver answers with [`render`](super::render)'s text. Returns the bound
/// address (so port 0 works) and the server task.
pub async fn serve(
    addr: SocketAddr,
    requests: mpsc::Sender<oneshot::Sender<String>>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    serve_with(addr, requests, shutdown, DRIVER_TIMEOUT).await
}

async fn serve_with(
    addr: SocketAddr,
    requests: mpsc::Sender<oneshot::Sender<String>>,
    mut shutdown: watch::Receiver<bool>,
    driver_timeout: Duration,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "metrics endpoint listening");
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        if connections.len() >= MAX_CONNECTIONS {
                            tracing::debug!(%peer, "metrics: too many connections");
                            continue;
                        }
                        let requests = requests.clone();
                        connections.spawn(connection(stream, requests, driver_timeout));
                    }
                    Err(e) => {
                        // Out of descriptors and the like: do not spin.
                        tracing::warn!(error = %e, "metrics: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.shutdown().await;
        tracing::info!(addr = %local, "metrics endpoint stopped");
    });
    Ok((local, task))
}

async fn connection(
    stream: TcpStream,
    requests: mpsc::Sender<oneshot::Sender<String>>,
    driver_timeout: Duration,
) {
    let service = hyper::service::service_fn(move |req| {
        let requests = requests.clone();
        async move { Ok::<_, Infallible>(answer(req, &requests, driver_timeout).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    if let Err(e) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(error = %e, "metrics connection");
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn answer(
    req: Request<Incoming>,
    requests: &mpsc::Sender<oneshot::Sender<String>>,
    driver_timeout: Duration,
) -> Response<Full<Bytes>> {
    if !matches!(req.uri().path(), "/metrics" | "/") {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let openmetrics = req
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let rendered = tokio::time::timeout(driver_timeout, async {
        let (tx, rx) = oneshot::channel();
        requests.send(tx).await.ok()?;
        rx.await.ok()
    })
    .await
    .ok()
    .flatten();
    let Some(text) = rendered else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "metrics unavailable\n");
    };
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(if openmetrics {
            OPENMETRICS_CONTENT_TYPE
        } else {
            TEXT_CONTENT_TYPE
        }),
    );
    response
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::metrics::render;
    use crate::metrics::testutil::{check_exposition, io, status};

    /// A fake driver: answers every request with `body`, counting them.
    fn driver(body: &'static str) -> mpsc::Sender<oneshot::Sender<String>> {
        let (tx, mut rx) = mpsc::channel::<oneshot::Sender<String>>(4);
        tokio::spawn(async move {
            while let Some(reply) = rx.recv().await {
                let _ = reply.send(body.to_string());
            }
        });
        tx
    }

    async fn get(addr: SocketAddr, request: &str) -> (u16, String, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
            .await
            .expect("response in time")
            .unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    fn request(method: &str, path: &str, extra: &str) -> String {
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n")
    }

    #[tokio::test]
    async fn serves_metrics_from_the_driver() {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), driver("m 1\n"), stop_rx)
            .await
            .unwrap();
        assert_ne!(addr.port(), 0);
        for path in ["/metrics", "/"] {
            let (status, head, body) = get(addr, &request("GET", path, "")).await;
            assert_eq!(status, 200);
            assert!(
                head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
                "{head}"
            );
            assert_eq!(body, "m 1\n");
        }
        let (status, head, _) = get(
            addr,
            &request(
                "GET",
                "/metrics",
                "Accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n",
            ),
        )
        .await;
        assert_eq!(status, 200);
        assert!(
            head.contains("content-type: application/openmetrics-text; version=1.0.0"),
            "{head}"
        );
        let (status, _, body) = get(addr, &request("GET", "/nope", "")).await;
        assert_eq!(status, 404);
        assert_eq!(body, "not found\n");
        let (status, head, _) =
            get(addr, &request("POST", "/metrics", "Content-Length: 0\r\n")).await;
        assert_eq!(status, 405);
        assert!(head.contains("allow: get, head"), "{head}");

        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("server stops")
            .unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn real_rendering_over_http() {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (tx, mut rx) = mpsc::channel::<oneshot::Sender<String>>(1);
        let status = status();
        let io = io();
        tokio::spawn(async move {
            while let Some(reply) = rx.recv().await {
                let _ = reply.send(render(&status, &io));
            }
        });
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), tx, stop_rx)
            .await
            .unwrap();
        let (code, _, body) = get(addr, &request("GET", "/metrics", "")).await;
        assert_eq!(code, 200);
        let samples = check_exposition(&body);
        assert_eq!(
            samples.get("grasp_sync_frames_received_total{}"),
            Some(&17.0)
        );
        drop(stop_tx); // a dropped sender stops the server too
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("server stops")
            .unwrap();
    }

    #[tokio::test]
    async fn silent_or_gone_driver_gives_503() {
        let (_stop_tx, stop_rx) = watch::channel(false);
        // A driver that takes requests and never answers them.
        let (tx, mut rx) = mpsc::channel::<oneshot::Sender<String>>(4);
        let hoard = tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Some(reply) = rx.recv().await {
                kept.push(reply);
            }
        });
        let (addr, _task) = serve_with(
            "127.0.0.1:0".parse().unwrap(),
            tx,
            stop_rx.clone(),
            Duration::from_millis(200),
        )
        .await
        .unwrap();
        let (status, _, body) = get(addr, &request("GET", "/metrics", "")).await;
        assert_eq!(status, 503);
        assert_eq!(body, "metrics unavailable\n");
        hoard.abort();

        // A driver that is gone: 503 at once.
        let (tx, rx) = mpsc::channel::<oneshot::Sender<String>>(1);
        drop(rx);
        let (addr, _task) = serve("127.0.0.1:0".parse().unwrap(), tx, stop_rx)
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let (status, _, _) = get(addr, &request("GET", "/metrics", "")).await;
        assert_eq!(status, 503);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
