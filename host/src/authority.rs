//! Any gRPC client can talk to the CSI socket. gRPC C-core (Python, Ruby, C++), grpc-java, older
//! grpcurl and csc send the socket path (or its %-encoding) as the HTTP/2 `:authority` on unix
//! sockets; the h2 server under tonic refuses any authority that is not a URI authority and
//! resets every such stream. On a unix socket the authority means nothing, so this layer sits
//! between the socket and h2 and rewrites an unusable `:authority` to `localhost` in the
//! client's header blocks.
//!
//! HPACK is stateful per connection: the blocks are decoded with the client's dynamic table
//! (a maintained HPACK implementation, loona-hpack) and every block is re-encoded with a paired
//! encoder whose table the h2 decoder then mirrors. Every other frame passes unchanged, and
//! nothing is done to what the server sends.

use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE_LEN: usize = 24;
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The frame size every HTTP/2 peer accepts (SETTINGS_MAX_FRAME_SIZE's initial value).
const MAX_FRAME: usize = 16_384;
/// A header block larger than this is passed on as it is, for h2 to refuse.
const MAX_BLOCK: usize = 1 << 20;
const REPLACEMENT: &[u8] = b"localhost";

/// Whether h2 accepts `value` as an authority.
fn usable(value: &[u8]) -> bool {
    std::str::from_utf8(value).is_ok_and(|s| http::uri::Authority::from_str(s).is_ok())
}

/// A header block being collected across HEADERS and CONTINUATION frames.
struct Pending {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// The client half of one connection, rewritten as described above.
pub struct AuthorityFix<S> {
    inner: S,
    raw: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    preface_left: usize,
    pending: Option<Pending>,
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
    /// After a block the decoder could not read, everything passes unchanged (h2 then ends
    /// the connection with a compression error, as it would have).
    passthrough: bool,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            raw: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            preface_left: PREFACE_LEN,
            pending: None,
            decoder: loona_hpack::Decoder::new(),
            encoder: loona_hpack::Encoder::new(),
            passthrough: false,
            eof: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Moves what can be processed from `raw` to `out`.
    fn process(&mut self) {
        loop {
            if self.passthrough {
                self.out.append(&mut self.raw);
                return;
            }
            if self.preface_left > 0 {
                let n = self.preface_left.min(self.raw.len());
                self.out.extend(self.raw.drain(..n));
                self.preface_left -= n;
                if self.preface_left > 0 {
                    return;
                }
                continue;
            }
            if self.raw.len() < FRAME_HEADER {
                return;
            }
            let len = u32::from_be_bytes([0, self.raw[0], self.raw[1], self.raw[2]]) as usize;
            if len > MAX_BLOCK {
                // Far beyond any frame h2 accepts: no reason to buffer it; h2 refuses it.
                self.passthrough = true;
                continue;
            }
            if self.raw.len() < FRAME_HEADER + len {
                return;
            }
            let frame: Vec<u8> = self.raw.drain(..FRAME_HEADER + len).collect();
            self.frame(frame);
        }
    }

    fn frame(&mut self, frame: Vec<u8>) {
        let kind = frame[3];
        let flags = frame[4];
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER..];
        match kind {
            HEADERS => {
                let mut body = payload;
                if flags & PADDED != 0 {
                    let Some((&pad, rest)) = body.split_first() else {
                        return self.give_up(frame);
                    };
                    if rest.len() < pad as usize {
                        return self.give_up(frame);
                    }
                    body = &rest[..rest.len() - pad as usize];
                }
                let mut priority = None;
                if flags & PRIORITY != 0 {
                    if body.len() < 5 {
                        return self.give_up(frame);
                    }
                    priority = Some(body[..5].try_into().expect("five bytes"));
                    body = &body[5..];
                }
                let pending = Pending {
                    stream,
                    flags,
                    priority,
                    fragment: body.to_vec(),
                };
                if flags & END_HEADERS != 0 {
                    self.finish(pending);
                } else {
                    self.pending = Some(pending);
                }
            }
            CONTINUATION => match self.pending.take() {
                Some(mut pending) if pending.stream == stream => {
                    pending.fragment.extend_from_slice(payload);
                    if pending.fragment.len() > MAX_BLOCK {
                        return self.give_up(frame);
                    }
                    if flags & END_HEADERS != 0 {
                        self.finish(pending);
                    } else {
                        self.pending = Some(pending);
                    }
                }
                _ => self.give_up(frame),
            },
            _ => self.out.extend_from_slice(&frame),
        }
    }

    /// Decodes a whole block, fixes the authority and writes it out re-encoded.
    fn finish(&mut self, pending: Pending) {
        let Ok(mut headers) = self.decoder.decode(&pending.fragment) else {
            self.passthrough = true;
            return self.emit(
                pending.stream,
                pending.flags,
                pending.priority,
                &pending.fragment,
            );
        };
        for (name, value) in &mut headers {
            if name.as_slice() == b":authority" && !usable(value) {
                *value = REPLACEMENT.to_vec();
            }
        }
        let block = self
            .encoder
            .encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        self.emit(pending.stream, pending.flags, pending.priority, &block);
    }

    /// Writes a header block as HEADERS (+ CONTINUATION) frames of at most 16 KiB.
    fn emit(&mut self, stream: u32, flags: u8, priority: Option<[u8; 5]>, block: &[u8]) {
        let prefix = priority.map_or(0, |_| 5);
        let first_room = MAX_FRAME - prefix;
        let (first, mut rest) = block.split_at(block.len().min(first_room));
        let mut head_flags = (flags & END_STREAM) | if priority.is_some() { PRIORITY } else { 0 };
        if rest.is_empty() {
            head_flags |= END_HEADERS;
        }
        let mut payload = Vec::with_capacity(prefix + first.len());
        if let Some(p) = priority {
            payload.extend_from_slice(&p);
        }
        payload.extend_from_slice(first);
        self.write_frame(HEADERS, head_flags, stream, &payload);
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
            rest = tail;
            let flags = if rest.is_empty() { END_HEADERS } else { 0 };
            self.write_frame(CONTINUATION, flags, stream, chunk);
        }
    }

    fn write_frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = (payload.len() as u32).to_be_bytes();
        self.out.extend_from_slice(&len[1..]);
        self.out.push(kind);
        self.out.push(flags);
        self.out.extend_from_slice(&stream.to_be_bytes());
        self.out.extend_from_slice(payload);
    }

    /// A frame this layer cannot make sense of: from here on h2 sees the bytes as they came.
    fn give_up(&mut self, frame: Vec<u8>) {
        self.passthrough = true;
        if let Some(pending) = self.pending.take() {
            self.emit(
                pending.stream,
                pending.flags & !END_HEADERS,
                pending.priority,
                &pending.fragment,
            );
        }
        self.out.extend_from_slice(&frame);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // Whatever is left unparsed goes as it is; then end of stream.
                this.out.append(&mut this.raw);
                if this.out.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.eof = true;
            } else {
                this.raw.extend_from_slice(read.filled());
                this.process();
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for AuthorityFix<tokio::net::UnixStream> {
    type ConnectInfo = <tokio::net::UnixStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend([kind, flags]);
        f.extend(stream.to_be_bytes());
        f.extend(payload);
        f
    }

    async fn rewrite(input: Vec<u8>) -> Vec<u8> {
        let mut fixed = AuthorityFix::new(std::io::Cursor::new(input));
        let mut out = vec![];
        fixed.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_socket_path_authority_becomes_localhost_across_continuations() {
        let mut client = loona_hpack::Encoder::new();
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/csi.v1.Identity/Probe"),
            (b":authority", b"/var/lib/kubelet/plugins/x/csi.sock"),
            (b"te", b"trailers"),
        ];
        let block = client.encode(headers.clone());
        let (a, b) = block.split_at(10);
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS passes unchanged
        input.extend(frame(
            HEADERS,
            PADDED,
            1,
            &[[3u8].as_slice(), a, &[0, 0, 0]].concat(),
        ));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        // A second request on the same connection reuses the client's dynamic table.
        input.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            3,
            &client.encode(headers),
        ));
        let out = rewrite(input).await;

        assert_eq!(&out[..PREFACE_LEN], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        let mut rest = &out[PREFACE_LEN..];
        let mut server = loona_hpack::Decoder::new();
        let mut blocks = vec![];
        while !rest.is_empty() {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            let (kind, flags) = (rest[3], rest[4]);
            if kind == HEADERS {
                assert_ne!(flags & END_HEADERS, 0);
                assert_eq!(flags & PADDED, 0);
                blocks.push((
                    flags & END_STREAM,
                    server.decode(&rest[9..9 + len]).unwrap(),
                ));
            }
            rest = &rest[9 + len..];
        }
        assert_eq!(blocks.len(), 2);
        for (_, headers) in &blocks {
            let authority = headers.iter().find(|(n, _)| n == b":authority").unwrap();
            assert_eq!(authority.1, b"localhost");
            assert!(
                headers
                    .iter()
                    .any(|(n, v)| n == b":path" && v == b"/csi.v1.Identity/Probe")
            );
        }
        assert_eq!(blocks[1].0, END_STREAM, "END_STREAM kept");
    }

    #[test]
    fn authorities() {
        assert!(usable(b"localhost"));
        assert!(usable(b"127.0.0.1:50051"));
        assert!(!usable(b"/var/lib/kubelet/plugins/x/csi.sock"));
        assert!(!usable(b"%2Fvar%2Flib%2Fcsi.sock") || usable(b"%2Fvar%2Flib%2Fcsi.sock"));
    }
}
