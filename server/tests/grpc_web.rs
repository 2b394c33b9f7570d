//! Browsers reach the client port with gRPC-Web over HTTP/1.1, with CORS for the origins allowed.

mod harness;

use std::time::Duration;

use harness::TestCluster;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn raw_http(addr: &str, request: Vec<u8>) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await.expect("response").unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_over_http1_with_cors() {
    let cluster = TestCluster::start_with(1, &["--cors-origin", "http://127.0.0.1:8080"]);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    cluster.client().put("web-key", "web-value").await.unwrap();
    let addr = cluster.addr(1);

    // CORS preflight from a page on an allowed origin.
    let preflight = format!(
        "OPTIONS /raftkv.v1.KV/Get HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://127.0.0.1:8080\r\n\
         Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type,x-grpc-web\r\n\
         Connection: close\r\n\r\n"
    );
    let resp = String::from_utf8_lossy(&raw_http(&addr, preflight.into_bytes()).await).to_lowercase();
    assert!(resp.starts_with("http/1.1 200"), "{resp}");
    assert!(resp.contains("access-control-allow-origin: http://127.0.0.1:8080"), "{resp}");

    // A gRPC-Web unary call: a length-prefixed protobuf frame over plain HTTP/1.1.
    let msg = raftkv_proto::GetRequest { key: b"web-key".to_vec(), serializable: false, revision: 0 }.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    let mut req = format!(
        "POST /raftkv.v1.KV/Get HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://127.0.0.1:8080\r\n\
         Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let raw = raw_http(&addr, req).await;
    let text = String::from_utf8_lossy(&raw).to_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("content-type: application/grpc-web+proto"), "{text}");
    assert!(text.contains("access-control-expose-headers") && text.contains("grpc-status"), "{text}");
    assert!(text.contains("grpc-status:0") || text.contains("grpc-status: 0"), "{text}");
    assert!(text.contains("web-value"), "the value came back: {text}");
}
