//! A private server survives what crash tests do to it: written data is
//! still there after SIGKILL and restart, and the server is really down in
//! between. Runs the real xtask (`$KG_XTASK`, or the one built beside this
//! test binary) and a real ArcadeDB; `cargo xtask it` selects it by name.

use kg_testkit::neo4rs::query;
use kg_testkit::{PrivateServer, RunTag, TestkitError};

async fn count_tagged(server: &PrivateServer, tag: &RunTag) -> Result<i64, TestkitError> {
    let graph = server.connect().await?;
    let mut rows = graph
        .execute(
            query("MATCH (n:Probe) WHERE n.run = $run RETURN count(n) AS n")
                .param("run", tag.as_str()),
        )
        .await?;
    let row = rows.next().await?;
    Ok(row.and_then(|row| row.get::<i64>("n").ok()).unwrap_or(-1))
}

#[tokio::test]
async fn private_bolt_server_keeps_committed_data_across_kill_and_restart(
) -> Result<(), TestkitError> {
    let server = PrivateServer::start().await?;
    let tag = RunTag::new("private_server_kill_restart");
    let pid_before = server.pid();
    assert!(pid_before.is_some(), "a started server has a pid file");

    let graph = server.connect().await?;
    graph
        .run(
            query("UNWIND range(1, 25) AS i CREATE (:Probe {run: $run, i: i})")
                .param("run", tag.as_str()),
        )
        .await?;
    assert_eq!(count_tagged(&server, &tag).await?, 25);

    server.kill().await?;
    assert_eq!(server.pid(), None, "kill removes the pid file");
    // Checked at the TCP level: the driver would retry a refused connection
    // with backoff for half a minute before giving up.
    let down = std::net::TcpStream::connect(("127.0.0.1", server.port()));
    assert!(down.is_err(), "a killed server must refuse connections");

    server.restart().await?;
    let pid_after = server.pid();
    assert!(
        pid_after.is_some() && pid_after != pid_before,
        "{pid_before:?} -> {pid_after:?}"
    );
    assert_eq!(count_tagged(&server, &tag).await?, 25);
    Ok(())
}
