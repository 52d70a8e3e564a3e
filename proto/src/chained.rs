//! gRPC messages whose batches are neither copied to be sent nor copied
//! when received.
//!
//! tonic encodes every message into its own send buffer, so each byte of a
//! batch a client produces, and each byte a leader replicates (once per
//! follower), is copied once more before the kernel copies it again into the
//! socket. The calls here encode a message as a list of buffers instead:
//! the gRPC frame header and the protobuf fields around each batch are
//! written into a small buffer, and every `bytes` field of at least a
//! threshold goes as the batch's own [`Bytes`], shared rather than
//! copied. HTTP/2 (h2) sends a DATA frame of that size straight from the
//! buffer it was given, with a vectored write of its own. Smaller fields
//! are copied, as tonic does, and the messages around them share frames
//! and writes. The threshold differs by direction: answers (a fetch's log
//! slices) share from [`ANSWER_CHAIN_MIN_BYTES`], requests (a producer's
//! batches, a leader's appends) from [`REQUEST_CHAIN_MIN_BYTES`].
//!
//! On the receiving side, [`Messages`] decodes messages from the HTTP/2
//! frames as they arrived, so a batch that came in one frame is a slice of
//! it; tonic's decoder copies every byte into a buffer of its own first.
//! Servers decode requests with it and answer with [`answer`]; [`unary`]
//! decodes its one answer with it too (a fetch answer's records). The
//! answers of a streaming [`call`] (small here) are decoded by tonic's own
//! [`Streaming`]. On the wire the messages are the same bytes as tonic's.

// One `unsafe impl`: `BufMut` is an unsafe trait. Every method delegates to
// a `BytesMut`, whose own implementation upholds the trait's contract.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http_body::Frame;
use prost::Message;
use tonic::Status;
use tonic::codec::Streaming;
use tonic::codegen::Service;
use tonic::codegen::http::{self, HeaderMap, HeaderValue};
use tonic::transport::Channel;
use tonic_prost::ProstDecoder;

/// In an answer, a `bytes` field at least this long is sent as its own
/// buffer; a shorter one is copied beside the fields around it. A fetch
/// answer's batches are slices of the log's mapped segments, which reads
/// hand to the socket without copying them in user space
/// (`../shared/DESIGN.md`); copying them below 64 KiB as well was not
/// measurably faster (docs/benchmarks.md, session 27).
pub const ANSWER_CHAIN_MIN_BYTES: usize = 16 * 1024;

/// In a request, a `bytes` field at least this long is sent as its own
/// buffer. Requests carry batches as producers made them, often a little
/// over 16 KiB (Kafka's default `batch.size`), and a peer's stream carries
/// appends of many groups: each shared batch costs a frame and a `writev`
/// of its own, on both the client and the leader, where copied ones share
/// them. Copying below 64 KiB took 11% more RF=3 throughput with 16 KiB
/// batches, with 2.6× fewer `writev`s on the brokers (session 27).
pub const REQUEST_CHAIN_MIN_BYTES: usize = 64 * 1024;

/// Messages ready at once are encoded together until they reach this many
/// bytes, so that a burst of messages goes out in few frames and writes.
const YIELD_BYTES: usize = 128 * 1024;

/// gRPC's frame header: a compression flag and the message's length.
const FRAME_HEADER_BYTES: usize = 5;

/// Encoded messages as a queue of buffers ready to send, and the buffer
/// being written.
#[derive(Debug)]
pub struct Chunks {
    ready: VecDeque<Bytes>,
    open: BytesMut,
    /// Bytes in `ready` and `open` together.
    len: usize,
    /// A `bytes` field at least this long is shared, not copied.
    chain_min: usize,
}

impl Chunks {
    /// No messages yet; `bytes` fields of at least `chain_min` bytes will
    /// be shared rather than copied.
    pub fn new(chain_min: usize) -> Chunks {
        Chunks { ready: VecDeque::new(), open: BytesMut::new(), len: 0, chain_min }
    }

    /// Appends `message` as one gRPC frame; fails, appending nothing, when
    /// it is longer than `max_bytes`.
    pub fn push_message<M: Message>(&mut self, message: &M, max_bytes: usize) -> Result<(), Status> {
        let len = message.encoded_len();
        if len > max_bytes {
            return Err(Status::out_of_range(format!(
                "a message of {len} bytes is too large: the limit is {max_bytes} bytes"
            )));
        }
        let Ok(frame_len) = u32::try_from(len) else {
            return Err(Status::out_of_range(format!("a message of {len} bytes is too long for a gRPC frame")));
        };
        self.open.reserve(FRAME_HEADER_BYTES + len.min(self.chain_min));
        self.put_u8(0);
        self.put_u32(frame_len);
        message.encode_raw(self);
        Ok(())
    }

    /// Closes the buffer being written, so that everything appended so far
    /// can be taken.
    pub fn seal(&mut self) {
        if !self.open.is_empty() {
            self.ready.push_back(self.open.split().freeze());
        }
    }

    /// The oldest sealed buffer.
    pub fn pop(&mut self) -> Option<Bytes> {
        let chunk = self.ready.pop_front()?;
        self.len -= chunk.len();
        Some(chunk)
    }

    /// Bytes appended and not taken yet.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is left to take or to seal.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

// SAFETY: each method delegates to `BytesMut`'s implementation of the same
// trait, which upholds its contract (`chunk_mut` and `advance_mut` refer to
// the same buffer, and `advance_mut`'s caller guarantees what `BytesMut`
// requires). `put` and `put_slice` only append through safe methods.
unsafe impl BufMut for Chunks {
    fn remaining_mut(&self) -> usize {
        self.open.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of `chunk_mut()`, which
        // is `self.open.chunk_mut()`.
        unsafe { self.open.advance_mut(cnt) };
        self.len += cnt;
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.open.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        self.open.extend_from_slice(src);
        self.len += src.len();
    }

    // prost writes a `bytes` field held as `Bytes` with `put(field.clone())`:
    // a long one is taken as it is (for `Bytes`, `copy_to_bytes` shares).
    fn put<T: Buf>(&mut self, mut src: T)
    where
        Self: Sized,
    {
        let len = src.remaining();
        if len >= self.chain_min {
            self.seal();
            self.ready.push_back(src.copy_to_bytes(len));
        } else {
            while src.has_remaining() {
                let chunk = src.chunk();
                let n = chunk.len();
                self.open.extend_from_slice(chunk);
                src.advance(n);
            }
        }
        self.len += len;
    }
}

/// A request or answer body: the messages of `source`, each one gRPC
/// frame, as [`Chunks`]; an answer ends with the call's status as trailers.
struct MessageBody<S> {
    source: S,
    chunks: Chunks,
    max_message_bytes: usize,
    source_ended: bool,
    /// The trailers still to send, for an answer.
    trailers: Option<HeaderMap>,
}

impl<S> MessageBody<S> {
    fn new(source: S, max_message_bytes: usize, trailers: Option<HeaderMap>, chain_min: usize) -> MessageBody<S> {
        MessageBody { source, chunks: Chunks::new(chain_min), max_message_bytes, source_ended: false, trailers }
    }
}

impl<S, M> http_body::Body for MessageBody<S>
where
    S: Stream<Item = M> + Unpin,
    M: Message,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        loop {
            if let Some(chunk) = this.chunks.pop() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if this.source_ended {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            while this.chunks.len() < YIELD_BYTES {
                match Pin::new(&mut this.source).poll_next(cx) {
                    Poll::Ready(Some(message)) => {
                        if let Err(status) = this.chunks.push_message(&message, this.max_message_bytes) {
                            this.source_ended = true;
                            return Poll::Ready(Some(Err(status)));
                        }
                    }
                    Poll::Ready(None) => {
                        this.source_ended = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            this.chunks.seal();
            if this.chunks.is_empty() && !this.source_ended {
                return Poll::Pending;
            }
        }
    }

    /// True once the last message's last buffer was taken and no trailers
    /// are left, so that HTTP/2 marks that buffer's DATA frame as the end
    /// of the stream. Without it a request ends with an empty DATA frame of
    /// its own, which the client wrote and the broker read separately.
    fn is_end_stream(&self) -> bool {
        self.source_ended && self.chunks.is_empty() && self.trailers.is_none()
    }
}

/// A gRPC call on `channel` to `path` (`/package.Service/Method`) whose
/// request messages come from `source` and are sent as [`Chunks`]; the
/// answers are decoded as tonic does, at most `max_answer_bytes` each.
/// `headers` are added to the request's (gRPC metadata).
pub async fn call<S, M, R>(
    channel: &mut Channel,
    path: &'static str,
    headers: HeaderMap,
    source: S,
    max_message_bytes: usize,
    max_answer_bytes: usize,
) -> Result<Streaming<R>, Status>
where
    S: Stream<Item = M> + Unpin + Send + 'static,
    M: Message + 'static,
    R: Message + Default + Send + 'static,
{
    let decoder = ProstDecoder::<R>::default();
    let (response, headers_only) = send(channel, path, headers, source, max_message_bytes).await?;
    let status_code = response.status();
    let body = response.into_body();
    Ok(if headers_only {
        Streaming::new_empty(decoder, body)
    } else {
        Streaming::new_response(decoder, body, status_code, None, Some(max_answer_bytes))
    })
}

/// Sends a call's request and waits for the answer's headers: the answer,
/// and whether it is made of headers only (with status OK: an error there
/// fails the call), as tonic's client tells them.
async fn send<S, M>(
    channel: &mut Channel,
    path: &'static str,
    headers: HeaderMap,
    source: S,
    max_message_bytes: usize,
) -> Result<(http::Response<tonic::body::Body>, bool), Status>
where
    S: Stream<Item = M> + Unpin + Send + 'static,
    M: Message + 'static,
{
    let body = MessageBody::new(source, max_message_bytes, None, REQUEST_CHAIN_MIN_BYTES);
    let mut request = http::Request::new(tonic::body::Body::new(body));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = http::Uri::from_static(path);
    *request.version_mut() = http::Version::HTTP_2;
    *request.headers_mut() = headers;
    request.headers_mut().insert(http::header::TE, HeaderValue::from_static("trailers"));
    request.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));

    std::future::poll_fn(|cx| channel.poll_ready(cx)).await.map_err(|e| Status::from_error(Box::new(e)))?;
    let response = channel.call(request).await.map_err(|e| Status::from_error(Box::new(e)))?;
    let headers_only = match Status::from_header_map(response.headers()) {
        Some(status) if status.code() != tonic::Code::Ok => return Err(status),
        Some(_) => true,
        None => false,
    };
    Ok((response, headers_only))
}

/// A unary gRPC call: one message out, one back. Both go without copies of
/// their large `bytes` fields: the request as [`Chunks`], the answer
/// decoded by [`Messages`] from the frames it arrived in.
pub async fn unary<M, R>(
    channel: &mut Channel,
    path: &'static str,
    message: M,
    max_message_bytes: usize,
    max_answer_bytes: usize,
) -> Result<R, Status>
where
    M: Message + Send + 'static,
    R: Message + Default + Send + 'static,
{
    let source = futures::stream::iter(Some(message));
    let (response, headers_only) = send(channel, path, HeaderMap::new(), source, max_message_bytes).await?;
    if headers_only {
        return Err(Status::internal("the server sent no answer"));
    }
    let mut answers = Messages::<_, R>::new(response.into_body(), max_answer_bytes);
    let answer = answers.next().await.transpose()?;
    // Read to the end: the trailers carry the call's status, and an error
    // there fails the call.
    while let Some(extra) = answers.next().await {
        extra?;
    }
    match answers.trailers.as_ref().and_then(Status::from_header_map) {
        Some(status) if status.code() != tonic::Code::Ok => Err(status),
        Some(_) => answer.ok_or_else(|| Status::internal("the server sent no answer")),
        None => Err(Status::internal("the answer ended without a gRPC status")),
    }
}

/// A server's answer to a streaming call: the messages of `source`, sent
/// as [`Chunks`], then the status OK.
pub fn answer<S, M>(source: S, max_message_bytes: usize) -> http::Response<tonic::body::Body>
where
    S: Stream<Item = M> + Unpin + Send + 'static,
    M: Message + 'static,
{
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(tonic::Code::Ok as i32));
    let body = MessageBody::new(source, max_message_bytes, Some(trailers), ANSWER_CHAIN_MIN_BYTES);
    let mut response = http::Response::new(tonic::body::Body::new(body));
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    response
}

/// The messages of a request or answer body, decoded as they arrive. A
/// `bytes` field that arrived within one HTTP/2 DATA frame (as those sent
/// by [`call`], [`unary`] and [`answer`] do, when long enough to be shared)
/// shares that frame's buffer instead of being copied; tonic's own decoder
/// copies every frame into a buffer of its own first.
pub struct Messages<B, R> {
    body: B,
    received: BufList,
    max_message_bytes: usize,
    ended: bool,
    /// The trailers that ended the body, if it has (an answer's status).
    trailers: Option<HeaderMap>,
    _message: std::marker::PhantomData<fn() -> R>,
}

impl<B, R> Messages<B, R> {
    /// Decodes `body`'s messages, refusing any longer than `max_message_bytes`.
    pub fn new(body: B, max_message_bytes: usize) -> Messages<B, R> {
        Messages {
            body,
            received: BufList::default(),
            max_message_bytes,
            ended: false,
            trailers: None,
            _message: Default::default(),
        }
    }

    /// The next whole message received, if there is one.
    fn next_message(&mut self) -> Result<Option<R>, Status>
    where
        R: Message + Default,
    {
        if self.received.remaining() < FRAME_HEADER_BYTES {
            return Ok(None);
        }
        let mut header = [0u8; FRAME_HEADER_BYTES];
        self.received.peek(&mut header);
        if header[0] != 0 {
            return Err(Status::unimplemented("compressed messages are not accepted"));
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > self.max_message_bytes {
            // "too large" is what clients look for (as in tonic's message).
            return Err(Status::out_of_range(format!(
                "a message of {len} bytes is too large: the limit is {} bytes",
                self.max_message_bytes
            )));
        }
        if self.received.remaining() < FRAME_HEADER_BYTES + len {
            return Ok(None);
        }
        self.received.advance(FRAME_HEADER_BYTES);
        let mut message = self.received.split_to(len);
        R::decode(&mut message)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("a message did not decode: {e}")))
    }
}

impl<B, R> Stream for Messages<B, R>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
    R: Message + Default,
{
    type Item = Result<R, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<R, Status>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match this.next_message() {
                Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                Ok(None) => {}
                Err(status) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(status)));
                }
            }
            match std::task::ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.received.push(data),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            this.trailers = Some(trailers);
                        }
                    }
                },
                Some(Err(e)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(Status::unavailable(format!("the stream broke: {e}")))));
                }
                None => {
                    this.ended = true;
                    if this.received.has_remaining() {
                        return Poll::Ready(Some(Err(Status::invalid_argument(format!(
                            "the stream ended inside a message ({} bytes left over)",
                            this.received.remaining()
                        )))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}

/// Received buffers, read as one.
#[derive(Debug, Default)]
struct BufList {
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl BufList {
    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    /// Copies the first `dst.len()` bytes without consuming them.
    fn peek(&self, dst: &mut [u8]) {
        let mut filled = 0;
        for chunk in &self.chunks {
            let n = chunk.len().min(dst.len() - filled);
            dst[filled..filled + n].copy_from_slice(&chunk[..n]);
            filled += n;
            if filled == dst.len() {
                break;
            }
        }
    }

    /// The first `len` bytes (at most [`Buf::remaining`]) as a list of
    /// their own, sharing the buffers.
    fn split_to(&mut self, len: usize) -> BufList {
        let mut taken = BufList::default();
        while taken.len < len {
            let Some(mut chunk) = self.chunks.pop_front() else { break };
            let want = len - taken.len;
            if chunk.len() > want {
                let rest = chunk.split_off(want);
                self.chunks.push_front(rest);
            }
            self.len -= chunk.len();
            taken.push(chunk);
        }
        taken
    }
}

impl Buf for BufList {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.front().map_or(&[], |c| c.as_ref())
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let Some(front) = self.chunks.front_mut() else { break };
            let n = cnt.min(front.len());
            front.advance(n);
            self.len -= n;
            cnt -= n;
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
    }

    // prost reads a `bytes` field held as `Bytes` with `copy_to_bytes`: one
    // that lies within one received buffer is a slice of it.
    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        if let Some(front) = self.chunks.front_mut() {
            if front.len() >= len {
                let bytes = front.split_to(len);
                self.len -= len;
                if front.is_empty() {
                    self.chunks.pop_front();
                }
                return bytes;
            }
        }
        let mut out = BytesMut::with_capacity(len);
        out.put(self.take(len));
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PartitionRecords, ProduceRequest};
    use crate::raft::{AppendEntriesRequest, Entry, RaftRequest, raft_request};

    fn concat(chunks: &mut Chunks) -> (Vec<u8>, Vec<Bytes>) {
        chunks.seal();
        let mut all = Vec::new();
        let mut parts = Vec::new();
        while let Some(chunk) = chunks.pop() {
            all.extend_from_slice(&chunk);
            parts.push(chunk);
        }
        (all, parts)
    }

    fn framed(message: &impl Message) -> Vec<u8> {
        let body = message.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn a_produce_request_is_the_same_bytes_and_its_large_batches_are_not_copied() {
        let large = Bytes::from(vec![7u8; REQUEST_CHAIN_MIN_BYTES]);
        let small = Bytes::from(vec![9u8; 100]);
        let request = ProduceRequest {
            acks: 1,
            timeout_ms: 3000,
            partitions: vec![
                PartitionRecords { topic: "orders".into(), partition: 3, batch: large.clone() },
                PartitionRecords { topic: "orders".into(), partition: 4, batch: small.clone() },
                PartitionRecords { topic: "payments".into(), partition: 0, batch: large.slice(1..) },
            ],
        };
        let mut chunks = Chunks::new(REQUEST_CHAIN_MIN_BYTES);
        chunks.push_message(&request, usize::MAX).expect("under the limit");
        assert_eq!(chunks.len(), framed(&request).len());
        let (all, parts) = concat(&mut chunks);
        assert_eq!(all, framed(&request));
        assert!(chunks.is_empty());
        // The first large batch is a buffer of its own, the very one given;
        // the one a byte shorter than the threshold was copied.
        assert!(parts.iter().any(|p| p.as_ptr() == large.as_ptr() && p.len() == large.len()));
        assert!(!parts.iter().any(|p| p.as_ptr() == large[1..].as_ptr()));
        assert!(!parts.iter().any(|p| p.as_ptr() == small.as_ptr()));
    }

    #[test]
    fn appends_for_a_follower_share_their_entries_and_several_messages_follow_each_other() {
        let entries: Vec<Bytes> = (0..3u8).map(|i| Bytes::from(vec![i; REQUEST_CHAIN_MIN_BYTES + 100])).collect();
        let append = RaftRequest {
            id: 17,
            group: 4,
            body: Some(raft_request::Body::Append(AppendEntriesRequest {
                vote: None,
                prev_log_id: None,
                entries: entries
                    .iter()
                    .enumerate()
                    .map(|(i, batch)| Entry { term: 2, index: i as u64 + 10, batch: batch.clone() })
                    .collect(),
                leader_commit: None,
            })),
        };
        let heartbeat = RaftRequest { id: 18, group: 4, body: None };
        let mut chunks = Chunks::new(REQUEST_CHAIN_MIN_BYTES);
        chunks.push_message(&append, usize::MAX).expect("under the limit");
        chunks.push_message(&heartbeat, usize::MAX).expect("under the limit");
        let (all, parts) = concat(&mut chunks);
        let mut expected = framed(&append);
        expected.extend_from_slice(&framed(&heartbeat));
        assert_eq!(all, expected);
        for entry in &entries {
            assert!(parts.iter().any(|p| p.as_ptr() == entry.as_ptr()), "an entry was copied");
        }
    }

    #[test]
    fn under_the_request_threshold_appends_share_one_buffer_and_an_answer_still_shares_its_batches() {
        // Four appends of Kafka's default 16 KiB batches, as a leader
        // sends them to a follower at once: copied into one buffer, which
        // goes as one frame and one write.
        let batch = Bytes::from(vec![3u8; 16 * 1024 + 200]);
        let mut chunks = Chunks::new(REQUEST_CHAIN_MIN_BYTES);
        for id in 0..4 {
            chunks.push_message(&append(id, std::slice::from_ref(&batch)), usize::MAX).expect("under the limit");
        }
        chunks.seal();
        let (_, parts) = concat(&mut chunks);
        assert_eq!(parts.len(), 1, "{} buffers", parts.len());
        // The same batch in an answer (a fetch's log slice) is shared.
        let mut chunks = Chunks::new(ANSWER_CHAIN_MIN_BYTES);
        chunks.push_message(&append(9, std::slice::from_ref(&batch)), usize::MAX).expect("under the limit");
        let (_, parts) = concat(&mut chunks);
        assert!(parts.iter().any(|p| p.as_ptr() == batch.as_ptr()), "the answer's batch was copied");
    }

    /// Polls `body` to its end: each frame's bytes (None for trailers) and
    /// whether the body said it had ended right after that frame.
    fn frames_and_ends<B: http_body::Body<Data = Bytes> + Unpin>(mut body: B) -> Vec<(Option<usize>, bool)>
    where
        B::Error: std::fmt::Debug,
    {
        let mut out = Vec::new();
        futures::executor::block_on(std::future::poll_fn(|cx| {
            while let Some(frame) = std::task::ready!(Pin::new(&mut body).poll_frame(cx)) {
                let len = frame.expect("a frame").into_data().ok().map(|d| d.len());
                out.push((len, body.is_end_stream()));
            }
            Poll::Ready(())
        }));
        out
    }

    #[test]
    fn a_request_marks_its_last_data_frame_as_the_end_and_an_answer_ends_with_its_trailers() {
        let large = Bytes::from(vec![7u8; REQUEST_CHAIN_MIN_BYTES]);
        let request = ProduceRequest {
            acks: 1,
            timeout_ms: 3000,
            partitions: vec![PartitionRecords { topic: "orders".into(), partition: 3, batch: large.clone() }],
        };
        let body =
            MessageBody::new(futures::stream::iter(Some(request.clone())), usize::MAX, None, REQUEST_CHAIN_MIN_BYTES);
        assert!(!http_body::Body::is_end_stream(&body), "nothing was sent yet");
        let frames = frames_and_ends(body);
        // Several buffers (the batch goes as one of its own): only the last
        // one ends the stream, so no empty DATA frame has to follow it.
        let ends: Vec<bool> = frames.iter().map(|(_, end)| *end).collect();
        assert_eq!(ends.last(), Some(&true), "{frames:?}");
        assert!(ends[..ends.len() - 1].iter().all(|end| !end), "{frames:?}");
        let sent: usize = frames.iter().filter_map(|(len, _)| *len).sum();
        assert_eq!(sent, framed(&request).len());

        let response = answer(futures::stream::iter(Some(request)), usize::MAX);
        let frames = frames_and_ends(response.into_body());
        assert_eq!(frames.last(), Some(&(None, true)), "the trailers come last and end it: {frames:?}");
        assert!(frames[..frames.len() - 1].iter().all(|(len, end)| len.is_some() && !end), "{frames:?}");
    }

    /// A request body of the given DATA frames.
    struct Frames(VecDeque<Bytes>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            Poll::Ready(self.get_mut().0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn decode_all(frames: Vec<Bytes>) -> Vec<Result<RaftRequest, Status>> {
        let messages = Messages::<_, RaftRequest>::new(Frames(frames.into()), 1 << 20);
        futures::executor::block_on(futures::StreamExt::collect(messages))
    }

    fn append(id: u64, entries: &[Bytes]) -> RaftRequest {
        RaftRequest {
            id,
            group: 1,
            body: Some(raft_request::Body::Append(AppendEntriesRequest {
                vote: None,
                prev_log_id: None,
                entries: entries.iter().map(|b| Entry { term: 1, index: id, batch: b.clone() }).collect(),
                leader_commit: None,
            })),
        }
    }

    fn batches(request: &RaftRequest) -> Vec<Bytes> {
        match &request.body {
            Some(raft_request::Body::Append(a)) => a.entries.iter().map(|e| e.batch.clone()).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn received_messages_decode_and_entries_in_one_frame_share_it() {
        let entries: Vec<Bytes> = (0..2u8).map(|i| Bytes::from(vec![i; 20_000])).collect();
        let sent = [append(1, &entries), append(2, &[Bytes::from_static(b"small")]), append(3, &entries)];
        let mut chunks = Chunks::new(ANSWER_CHAIN_MIN_BYTES);
        for message in &sent {
            chunks.push_message(message, usize::MAX).expect("under the limit");
        }
        chunks.seal();
        let mut frames = Vec::new();
        while let Some(chunk) = chunks.pop() {
            // Cut the small frames at every byte, so that headers and
            // fields arrive in pieces; the large ones arrive whole.
            if chunk.len() < ANSWER_CHAIN_MIN_BYTES {
                frames.extend((0..chunk.len()).map(|i| chunk.slice(i..i + 1)));
            } else {
                frames.push(chunk);
            }
        }
        let received: Vec<RaftRequest> = decode_all(frames.clone()).into_iter().map(|r| r.expect("decodes")).collect();
        assert_eq!(received, sent);
        for message in [&received[0], &received[2]] {
            for batch in batches(message) {
                assert!(frames.iter().any(|f| f.as_ptr() == batch.as_ptr()), "an entry was copied");
            }
        }
    }

    #[test]
    fn an_answer_decodes_with_its_large_fields_shared_and_ends_with_status_ok() {
        let entries = vec![Bytes::from(vec![7u8; 40_000]), Bytes::from_static(b"small")];
        let sent = append(9, &entries);
        let response = answer(futures::stream::iter(Some(sent.clone())), usize::MAX);
        let mut messages = Messages::<_, RaftRequest>::new(response.into_body(), 1 << 20);
        let got = futures::executor::block_on(async {
            let mut got = Vec::new();
            while let Some(message) = messages.next().await {
                got.push(message.expect("decodes"));
            }
            got
        });
        assert_eq!(got, vec![sent]);
        assert_eq!(batches(&got[0])[0].as_ptr(), entries[0].as_ptr(), "the large field was never copied");
        let trailers = messages.trailers.as_ref().expect("the answer ends with trailers");
        assert_eq!(Status::from_header_map(trailers).expect("a status").code(), tonic::Code::Ok);
    }

    #[test]
    fn a_stream_cut_inside_a_message_or_over_the_limit_is_an_error() {
        let mut chunks = Chunks::new(REQUEST_CHAIN_MIN_BYTES);
        chunks.push_message(&append(1, &[Bytes::from(vec![5u8; 100])]), usize::MAX).expect("under the limit");
        chunks.seal();
        let whole = chunks.pop().expect("one chunk");
        let cut = decode_all(vec![whole.slice(..whole.len() - 1)]);
        assert_eq!(cut.len(), 1);
        assert_eq!(cut[0].as_ref().expect_err("cut").code(), tonic::Code::InvalidArgument);

        let mut big = vec![0u8, 0, 0x20, 0, 0];
        big.extend_from_slice(&[0; 16]);
        let over = decode_all(vec![Bytes::from(big)]);
        let over = over[0].as_ref().expect_err("over");
        assert_eq!(over.code(), tonic::Code::OutOfRange);
        assert!(over.message().contains("too large"), "{over:?}");

        let compressed = decode_all(vec![Bytes::from_static(&[1, 0, 0, 0, 0])]);
        assert_eq!(compressed[0].as_ref().expect_err("compressed").code(), tonic::Code::Unimplemented);
    }

    #[test]
    fn a_message_over_the_limit_is_refused_and_leaves_nothing_behind() {
        let request = ProduceRequest {
            acks: 1,
            timeout_ms: 1,
            partitions: vec![PartitionRecords { topic: "t".into(), partition: 0, batch: Bytes::from(vec![1u8; 64]) }],
        };
        let mut chunks = Chunks::new(REQUEST_CHAIN_MIN_BYTES);
        let refused = chunks.push_message(&request, 32).expect_err("over the limit");
        assert_eq!(refused.code(), tonic::Code::OutOfRange);
        assert!(chunks.is_empty());
    }
}
