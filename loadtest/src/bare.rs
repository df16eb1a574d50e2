//! The HTTP ceiling of the machine: a server that reads each request and answers
//! `204 No Content`, on the same stack as dynakv (axum over hyper, tokio).

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;

pub async fn serve(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let app = Router::new().fallback(|_body: Bytes| async { StatusCode::NO_CONTENT });
    // As a dynakv node does (its `server::listen`): the default backlog of 128 drops the
    // SYNs of a burst of new connections, and a dropped SYN costs its client a second.
    let socket = if listen.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(listen)?;
    let listener = socket.listen(4096)?;
    eprintln!("bare HTTP server on {listen}: 204 to every request");
    axum::serve(listener, app).await?;
    Ok(())
}
