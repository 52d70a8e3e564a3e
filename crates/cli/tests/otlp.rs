//! With the `otlp` feature, `strata server --otlp-endpoint` exports its
//! spans to an OpenTelemetry collector: a stand-in collector (the OTLP
//! trace service on a real socket) receives the `rpc` span of a produce,
//! its `partition` span naming the topic, and the `strata` service name.
//! Run with `cargo test -p strata-cli --features otlp --test otlp` (CI does).
#![cfg(feature = "otlp")]

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use strata_client::{Admin, Client, NewTopic, Producer, Record};

/// What the collector received: (service name, span name, attributes as text).
type Received = Arc<Mutex<Vec<(String, String, Vec<(String, String)>)>>>;

struct Collector(Received);

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = self.0.lock().expect("lock");
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .map(|kv| text(kv.value.as_ref()))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    let attributes =
                        span.attributes.iter().map(|kv| (kv.key.clone(), text(kv.value.as_ref()))).collect();
                    received.push((service.clone(), span.name, attributes));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_exports_its_request_spans_to_an_otlp_collector() {
    let received: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind collector");
    let collector_addr = listener.local_addr().expect("addr");
    let service = TraceServiceServer::new(Collector(received.clone()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let dir = std::env::temp_dir().join(format!("strata-otlp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (client_port, peer_port, http_port) = (free_port(), free_port(), free_port());
    let mut server = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["server", "--stop-on-stdin-eof", "--node-id", "1"])
        .args(["--peers", &format!("1=127.0.0.1:{peer_port}")])
        .args(["--data-dir", &dir.display().to_string()])
        .args(["--listen-client", &format!("127.0.0.1:{client_port}")])
        .args(["--listen-peer", &format!("127.0.0.1:{peer_port}")])
        .args(["--listen-http", &format!("127.0.0.1:{http_port}")])
        .args(["--otlp-endpoint", &format!("http://{collector_addr}")])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start strata server");

    let client = Client::new(&format!("127.0.0.1:{client_port}")).expect("client");
    let admin = Admin::new(&client);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match admin.create_topic(NewTopic::new("traced", 1).replication_factor(1)).await {
            Ok(()) => break,
            Err(err) => {
                assert!(Instant::now() < deadline, "the server did not take a topic: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let producer = Producer::new(&client);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sent = producer.send(Record::new("traced", "hello").partition(0)).await.expect("send");
        match sent.await {
            Ok(_) => break,
            Err(err) => assert!(Instant::now() < deadline, "produce failed: {err}"),
        }
    }
    producer.close().await;

    // A graceful stop flushes the exporter's last batch.
    drop(server.stdin.take());
    let status = server.wait().expect("wait for the server");
    assert!(status.success(), "server exit: {status}");
    let _ = std::fs::remove_dir_all(&dir);

    let received = received.lock().expect("lock").clone();
    let produce = received
        .iter()
        .find(|(_, name, attrs)| name == "rpc" && attrs.iter().any(|(k, v)| k == "path" && v.ends_with("/Produce")));
    let (service, _, _) = produce.unwrap_or_else(|| panic!("no produce rpc span among {} spans", received.len()));
    assert_eq!(service, "strata");
    assert!(
        received
            .iter()
            .any(|(_, name, attrs)| name == "partition" && attrs.iter().any(|(k, v)| k == "topic" && v == "traced")),
        "no partition span for topic traced among {received:?}"
    );
}
