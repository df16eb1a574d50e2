//! The HTTP ceiling of the machine: a server that reads each request and answers
//! `204 No Content`, on the same stack as dynakv (axum over hyper, tokio).

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;

pub async fn serve(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let app = Router::new().fallback(|_body: Bytes| async { StatusCode::NO_CONTENT });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("bare HTTP server on {listen}: 204 to every request");
    axum::serve(listener, app).await?;
    Ok(())
}
