//! The real transport: small verbs over the replica stream (see [`super::link`]),
//! everything else (anti-entropy, forwarded writes, hint delivery, gossip) as a postcard
//! body over HTTP/1.1 with pooled keep-alive connections.

use std::time::Duration;

use bytes::Bytes;
use dynakv_http_api::{ApiError, ErrorBody};
use futures::future::BoxFuture;

use super::link::Links;
use super::message::{self, Answer, CONTENT_TYPE, Request};
use super::{Reply, RpcError, Traffic, Transport};

#[derive(Clone)]
pub struct NetTransport {
    http: reqwest::Client,
    links: Links,
}

impl NetTransport {
    pub fn new() -> NetTransport {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            // Peers close connections idle for their read timeout (at least
            // MIN_READ_TIMEOUT_MS, whatever each is configured with): drop pooled ones well
            // before, so a request is never sent on one the peer is closing that moment.
            .pool_idle_timeout(Duration::from_millis(crate::config::MIN_READ_TIMEOUT_MS / 2))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .expect("static client configuration is valid");
        NetTransport {
            http,
            links: Links::default(),
        }
    }
}

impl Default for NetTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl Transport for NetTransport {
    fn send(&self, addr: &str, req: Request, timeout: Duration) -> BoxFuture<'static, Result<Reply, RpcError>> {
        let this = self.clone();
        let addr = addr.to_string();
        Box::pin(async move {
            let req = if req.streamable() {
                match this.links.send(&addr, req, timeout).await {
                    Ok(result) => return result,
                    // The link is gone (runtime shutting down): send it on its own.
                    Err(req) => req,
                }
            } else {
                req
            };
            this.post(&addr, &req, timeout).await
        })
    }
}

impl NetTransport {
    /// One request as an HTTP exchange.
    async fn post(&self, addr: &str, req: &Request, timeout: Duration) -> Result<Reply, RpcError> {
        let transport = |detail: String| RpcError::Transport {
            addr: addr.to_string(),
            detail,
        };
        let classify = |e: reqwest::Error| {
            // reqwest's Display hides the cause ("error sending request"); keep it.
            let mut detail = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                detail.push_str(": ");
                detail.push_str(&s.to_string());
                source = s.source();
            }
            if e.is_timeout() {
                RpcError::Timeout {
                    addr: addr.to_string(),
                    timeout,
                }
            } else if e.is_connect() {
                RpcError::Connect {
                    addr: addr.to_string(),
                    detail,
                }
            } else {
                transport(detail)
            }
        };
        let body = Bytes::from(message::encode(req));
        let sent = body.len() as u64;
        let resp = self
            .http
            .post(format!("http://{addr}{}", req.route().path()))
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(classify)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(classify)?;
        if status.is_success() {
            return message::decode::<Answer>(&body)
                .map(|answer| Reply {
                    answer,
                    traffic: Traffic {
                        sent,
                        received: body.len() as u64,
                    },
                })
                .map_err(|e| transport(format!("undecodable answer: {e}")));
        }
        let error = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(b) => ApiError::from_body(status.as_u16(), b),
            Err(_) => ApiError::Upstream {
                status: status.as_u16(),
                code: "peer_error".into(),
                message: String::from_utf8_lossy(&body).chars().take(200).collect(),
            },
        };
        Err(RpcError::Remote {
            addr: addr.to_string(),
            error,
        })
    }
}
