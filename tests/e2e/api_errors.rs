//! Bad input to the api: the right status, a JSON body naming the problem, and nothing written
//! or announced.

use std::time::Duration;

use courier_tests::{Stack, services::product};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::assert_no_event;

async fn send(stack: &Stack, path: &str, content_type: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let response = stack
        .http
        .post(format!("{}{path}", stack.api.url()))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let stack = Stack::start().await;
    let mut ws = stack.ws().await;
    ws.subscribe("products", None, None).await.unwrap();
    let json_ct = "application/json";

    let (status, body) = send(&stack, "/api/v1/products", json_ct, b"{\"nombre\": ".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "malformed_json");

    let (status, body) = send(
        &stack,
        "/api/v1/products",
        json_ct,
        br#"{"nombre": "x", "precio": "cheap"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["error"]["fields"],
        json!([{"field": "precio", "reason": "\"cheap\" is not of type \"number\""}])
    );

    let (status, body) =
        send(&stack, "/api/v1/products", json_ct, br#"{"talla": "M"}"#.to_vec()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["nombre", "precio"], "missing fields are each named");

    let (status, body) = send(&stack, "/api/v1/products", json_ct, b"[1, 2]".to_vec()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let (status, body) =
        send(&stack, "/api/v1/products", "text/plain", serde_json::to_vec(&product(1)).unwrap())
            .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["error"]["code"], "unsupported_media_type");

    let huge =
        serde_json::to_vec(&json!({"nombre": "x".repeat(300 * 1024), "precio": 1.0})).unwrap();
    let (status, body) = send(&stack, "/api/v1/products", json_ct, huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "payload_too_large");

    let (status, body) =
        send(&stack, "/api/v1/unicorns", json_ct, serde_json::to_vec(&product(1)).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"]["message"].as_str().unwrap().contains("unicorns"));

    let (status, body) = stack.get("/api/v1/products/65f0c0ffee0123456789abcd").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = stack.get("/api/v1/products/not-an-id").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = stack.get("/api/v1/products?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = stack.get("/api/v1/products?cursor=zzz").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Nothing was written and nothing was announced.
    let (status, list) = stack.get("/api/v1/products").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"], json!([]));
    assert_no_event(&mut ws, Duration::from_millis(800)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_through_every_document_once() {
    let stack = Stack::start().await;
    let mut created = Vec::new();
    for n in 0..7 {
        let (status, doc) = stack.post("products", &product(n)).await;
        assert_eq!(status, StatusCode::CREATED);
        created.push(doc);
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/products?limit=3".to_owned();
    loop {
        let (status, page) = stack.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(cursor) => path = format!("/api/v1/products?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, created, "creation order, each document once");
}

/// Reads one HTTP/1.1 response (status line, headers, a `Content-Length` body) from `reader`.
async fn read_response(
    reader: &mut tokio::io::BufReader<tokio::net::TcpStream>,
) -> (u16, Vec<String>, Value) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut status_line = String::new();
    reader.read_line(&mut status_line).await.expect("a status line");
    let status: u16 = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("a header line");
        let line = line.trim_end().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        headers.push(line);
    }
    let length: usize = headers
        .iter()
        .find_map(|h| h.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .expect("a content-length");
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.expect("the body");
    (status, headers, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// An oversized body gets its 413 JSON answer after the api has read (and dropped) the rest of
/// the body, so the client, still writing, reads the answer instead of a reset; the connection
/// then stays open for the next request. (Answering before reading closed the connection under
/// the writing client: a broken pipe, or an unanswered next request.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_answered_413_on_a_connection_that_stays_usable() {
    use tokio::io::AsyncWriteExt;
    let stack = Stack::start().await;
    let body = serde_json::to_vec(&json!({"nombre": "x".repeat(300 * 1024), "precio": 1.0}))
        .expect("a JSON body");
    let stream = tokio::net::TcpStream::connect(stack.api.addr).await.expect("the api listens");
    let mut reader = tokio::io::BufReader::new(stream);
    let head = format!(
        "POST /api/v1/products HTTP/1.1\r\nhost: courier\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let second = "GET /api/v1/products HTTP/1.1\r\nhost: courier\r\n\r\n";
    let timeout = Duration::from_secs(20);
    let exchange = async {
        let stream = reader.get_mut();
        stream.write_all(head.as_bytes()).await.expect("the head is written");
        stream.write_all(&body).await.expect("the whole body is written (no reset)");
        let (status, headers, error) = read_response(&mut reader).await;
        assert_eq!(status, 413, "{headers:?} {error}");
        assert_eq!(error["error"]["code"], "payload_too_large");
        assert!(!headers.iter().any(|h| h == "connection: close"), "{headers:?}");
        reader.get_mut().write_all(second.as_bytes()).await.expect("the connection is open");
        let (status, _, page) = read_response(&mut reader).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["items"], json!([]), "the oversized product was not written");
    };
    tokio::time::timeout(timeout, exchange).await.expect("both answers in time");
}
