//! One dedicated HTTP/1.1 connection (plain hyper, no pool): a worker that
//! owns one sends its requests one after another on the same socket, so "32
//! connections" means exactly 32 sockets. It reconnects when the server has
//! closed it between requests.

use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::client::Transport;
use crate::error::CallError;

/// Longest a TCP connect plus HTTP handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A lazily opened HTTP/1.1 connection to one `host:port`.
#[derive(Debug)]
pub struct Conn {
    authority: String,
    host: HeaderValue,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// A connection to `url`'s authority; nothing is opened until the first request.
    pub fn new(url: &Uri) -> Result<Conn, CallError> {
        let authority = url
            .authority()
            .ok_or_else(|| CallError::Protocol(format!("{url} has no host:port")))?
            .as_str()
            .to_owned();
        let host = HeaderValue::from_str(&authority).map_err(|e| CallError::Protocol(e.to_string()))?;
        Ok(Conn {
            authority,
            host,
            sender: None,
        })
    }

    /// Opens the connection now (a fresh one if it was open).
    pub async fn connect(&mut self) -> Result<(), CallError> {
        self.sender = None;
        let open = async {
            let stream = TcpStream::connect(&self.authority)
                .await
                .map_err(CallError::transport)?;
            stream.set_nodelay(true).map_err(CallError::transport)?;
            let (sender, connection) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(CallError::transport)?;
            // Ends when the sender is dropped and no response is in flight,
            // or when the peer closes.
            tokio::spawn(connection);
            Ok::<_, CallError>(sender)
        };
        let sender = tokio::time::timeout(CONNECT_TIMEOUT, open)
            .await
            .map_err(|_| CallError::Timeout(CONNECT_TIMEOUT))??;
        self.sender = Some(sender);
        Ok(())
    }

    /// Sends `request` (absolute or origin-form URI) and returns the response
    /// once its headers arrived; the caller reads the body before the next one.
    pub async fn request(
        &mut self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, CallError> {
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *request.uri_mut() = Uri::from(path);
        request.headers_mut().insert(HOST, self.host.clone());
        // A connection the server closed while idle is replaced before the
        // request goes out, so the request is never lost to it.
        let usable = match &mut self.sender {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            self.connect().await?;
        }
        let sender = self
            .sender
            .as_mut()
            .ok_or_else(|| CallError::Transport("not connected".into()))?;
        match sender.send_request(request).await {
            Ok(response) => Ok(response),
            Err(error) => {
                self.sender = None;
                Err(CallError::transport(error))
            }
        }
    }
}

impl Transport for Conn {
    async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Response<Incoming>, CallError> {
        self.request(request).await
    }
}
