//! The beanstalkd protocol over real sockets: replies and errors as
//! beanstalkd gives them, and a third-party client (the `beanstalkc`
//! crate) driving the broker unchanged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use queue::beanstalk::{serve, BeanstalkOptions};
use queue::{Broker, BrokerOptions, SystemClock};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

async fn start() -> (tempfile::TempDir, SocketAddr, Arc<Broker>) {
    let dir = tempfile::tempdir().expect("tmp");
    let b =
        Broker::open(dir.path(), BrokerOptions::default(), Arc::new(SystemClock)).expect("open");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(serve(
        l,
        b.clone(),
        BeanstalkOptions { max_job_size: 100 },
        std::future::pending(),
    ));
    (dir, addr, b)
}

struct C(BufReader<TcpStream>);

impl C {
    async fn new(a: SocketAddr) -> C {
        C(BufReader::new(
            TcpStream::connect(a).await.expect("connect"),
        ))
    }
    async fn send(&mut self, raw: &[u8]) {
        self.0.get_mut().write_all(raw).await.expect("write");
    }
    async fn line(&mut self) -> String {
        let mut l = String::new();
        self.0.read_line(&mut l).await.expect("read");
        l
    }
    /// Sends a command and reads one line.
    async fn ask(&mut self, cmd: &str) -> String {
        self.send(format!("{cmd}\r\n").as_bytes()).await;
        self.line().await
    }
    /// Reads `n` bytes plus CRLF.
    async fn body(&mut self, n: usize) -> String {
        let mut b = vec![0u8; n + 2];
        self.0.read_exact(&mut b).await.expect("body");
        assert_eq!(&b[n..], b"\r\n");
        String::from_utf8(b[..n].to_vec()).expect("utf8")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_answer_as_beanstalkd_does() {
    let (_d, a, _b) = start().await;
    let mut c = C::new(a).await;
    assert_eq!(c.ask("use photos").await, "USING photos\r\n");
    assert_eq!(c.ask("list-tube-used").await, "USING photos\r\n");
    assert_eq!(c.ask("put 10 0 60 5\r\nhello").await, "INSERTED 1\r\n");
    assert_eq!(c.ask("put 5 0 60 3\r\nabc").await, "INSERTED 2\r\n");
    assert_eq!(c.ask("put 1 30 60 1\r\nd").await, "INSERTED 3\r\n");
    assert_eq!(c.ask("peek-ready").await, "FOUND 2 3\r\n");
    assert_eq!(c.body(3).await, "abc");
    assert_eq!(c.ask("peek-delayed").await, "FOUND 3 1\r\n");
    assert_eq!(c.body(1).await, "d");
    assert_eq!(c.ask("peek-buried").await, "NOT_FOUND\r\n");
    // Reserve watches "default" only until told otherwise.
    assert_eq!(c.ask("reserve-with-timeout 0").await, "TIMED_OUT\r\n");
    assert_eq!(c.ask("watch photos").await, "WATCHING 2\r\n");
    assert_eq!(c.ask("ignore default").await, "WATCHING 1\r\n");
    assert_eq!(c.ask("ignore photos").await, "NOT_IGNORED\r\n");
    assert_eq!(c.ask("reserve").await, "RESERVED 2 3\r\n");
    assert_eq!(c.body(3).await, "abc");
    assert_eq!(c.ask("touch 2").await, "TOUCHED\r\n");
    assert_eq!(c.ask("release 2 7 0").await, "RELEASED\r\n");
    assert_eq!(c.ask("reserve-with-timeout 1").await, "RESERVED 2 3\r\n");
    assert_eq!(c.body(3).await, "abc");
    assert_eq!(c.ask("bury 2 8").await, "BURIED\r\n");
    assert_eq!(c.ask("peek-buried").await, "FOUND 2 3\r\n");
    c.body(3).await;
    let stats = c.ask("stats-job 2").await;
    let n: usize = stats
        .trim()
        .strip_prefix("OK ")
        .expect("OK")
        .parse()
        .expect("n");
    let y = c.body(n).await;
    for want in [
        "id: 2\n",
        "tube: photos\n",
        "state: buried\n",
        "pri: 8\n",
        "reserves: 2\n",
        "releases: 1\n",
        "buries: 1\n",
    ] {
        assert!(y.contains(want), "{want:?} in {y}");
    }
    assert_eq!(c.ask("kick 10").await, "KICKED 1\r\n");
    assert_eq!(
        c.ask("kick 10").await,
        "KICKED 1\r\n",
        "then the delayed one"
    );
    assert_eq!(c.ask("kick-job 99").await, "NOT_FOUND\r\n");
    assert_eq!(c.ask("reserve").await, "RESERVED 3 1\r\n");
    c.body(1).await;
    assert_eq!(c.ask("delete 3").await, "DELETED\r\n");
    assert_eq!(c.ask("delete 3").await, "NOT_FOUND\r\n");
    assert_eq!(c.ask("peek 1").await, "FOUND 1 5\r\n");
    assert_eq!(c.body(5).await, "hello");
    let s = c.ask("stats-tube photos").await;
    let n: usize = s
        .trim()
        .strip_prefix("OK ")
        .expect("OK")
        .parse()
        .expect("n");
    let y = c.body(n).await;
    assert!(
        y.contains("name: photos\n")
            && y.contains("current-jobs-ready: 2\n")
            && y.contains("total-jobs: 3\n"),
        "{y}"
    );
    assert_eq!(c.ask("stats-tube nope").await, "NOT_FOUND\r\n");
    let s = c.ask("list-tubes").await;
    let n: usize = s
        .trim()
        .strip_prefix("OK ")
        .expect("OK")
        .parse()
        .expect("n");
    assert_eq!(c.body(n).await, "---\n- default\n- photos\n");
    let s = c.ask("stats").await;
    let n: usize = s
        .trim()
        .strip_prefix("OK ")
        .expect("OK")
        .parse()
        .expect("n");
    assert!(c.body(n).await.contains("current-jobs-ready: 2\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_beanstalkd_errors_and_loses_nothing() {
    let (_d, a, b) = start().await;
    let mut c = C::new(a).await;
    assert_eq!(c.ask("frobnicate").await, "UNKNOWN_COMMAND\r\n");
    assert_eq!(c.ask("put 1 0 60").await, "BAD_FORMAT\r\n");
    assert_eq!(c.ask("put x 0 60 1\r\nx").await, "BAD_FORMAT\r\n");
    // The body was not read after a bad line, so it arrives as a command.
    assert_eq!(c.line().await, "UNKNOWN_COMMAND\r\n");
    // Too big: the body is read and thrown away, then the answer comes.
    let mut big = b"put 1 0 60 101\r\n".to_vec();
    big.extend_from_slice(&[b'x'; 101]);
    big.extend_from_slice(b"\r\n");
    c.send(&big).await;
    assert_eq!(c.line().await, "JOB_TOO_BIG\r\n");
    assert_eq!(c.ask("put 1 0 60 3\r\nabcde").await, "EXPECTED_CRLF\r\n");
    // What followed the five body bytes (an empty line) is read as a command.
    assert_eq!(c.line().await, "UNKNOWN_COMMAND\r\n");
    assert_eq!(c.ask("use -bad").await, "BAD_FORMAT\r\n");
    assert_eq!(c.ask("delete 12345").await, "NOT_FOUND\r\n");
    assert_eq!(c.ask("put 1 0 60 2\r\nok").await, "INSERTED 1\r\n");
    // Another connection cannot delete, release or bury a job it did not
    // reserve.
    assert_eq!(c.ask("reserve").await, "RESERVED 1 2\r\n");
    c.body(2).await;
    let mut other = C::new(a).await;
    assert_eq!(other.ask("delete 1").await, "NOT_FOUND\r\n");
    assert_eq!(other.ask("release 1 0 0").await, "NOT_FOUND\r\n");
    assert_eq!(other.ask("bury 1 0").await, "NOT_FOUND\r\n");
    // A line over 224 bytes: BAD_FORMAT, connection closed.
    let long = format!("use {}\r\n", "a".repeat(230));
    other.send(long.as_bytes()).await;
    assert_eq!(other.line().await, "BAD_FORMAT\r\n");
    assert_eq!(other.line().await, "", "closed");
    // The holder disconnects: its job is ready again for others.
    drop(c);
    let mut third = C::new(a).await;
    assert_eq!(
        third.ask("reserve-with-timeout 5").await,
        "RESERVED 1 2\r\n"
    );
    assert_eq!(b.queue_stats("default").expect("stats").total, 1);
}

#[test]
fn a_third_party_beanstalkd_client_works_unchanged() {
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let (_d, a, _b) = rt.block_on(start());
    let mut conn = beanstalkc::Beanstalkc::new()
        .host("127.0.0.1")
        .port(a.port())
        .connection_timeout(Some(Duration::from_secs(5)))
        .connect()
        .expect("connect");
    conn.use_tube("thumbs").expect("use");
    conn.watch("thumbs").expect("watch");
    let id = conn
        .put(b"make 128px", 10, Duration::ZERO, Duration::from_secs(30))
        .expect("put");
    let delayed = conn
        .put(
            b"later",
            10,
            Duration::from_secs(60),
            Duration::from_secs(30),
        )
        .expect("put");
    assert_eq!(conn.using().expect("using"), "thumbs");
    assert!(conn.tubes().expect("tubes").contains(&"thumbs".to_owned()));
    let stats = conn.stats_tube("thumbs").expect("stats-tube");
    assert_eq!(
        stats.get("current-jobs-ready").map(String::as_str),
        Some("1")
    );
    {
        let mut job = conn.reserve().expect("reserve");
        assert_eq!((job.id(), job.body()), (id, &b"make 128px"[..]));
        job.touch().expect("touch");
        job.bury_default().expect("bury");
    }
    assert_eq!(conn.kick(1).expect("kick"), 1);
    {
        let mut job = conn.reserve().expect("reserve again");
        assert_eq!(job.id(), id);
        let st = job.stats().expect("stats-job");
        assert_eq!(st.get("state").map(String::as_str), Some("reserved"));
        job.delete().expect("delete");
    }
    conn.kick_job(delayed).expect("kick-job");
    let mut job = conn
        .reserve_with_timeout(Duration::from_secs(2))
        .expect("reserve");
    assert_eq!(job.body(), b"later");
    job.release_default().expect("release");
    assert!(conn
        .stats()
        .expect("stats")
        .contains_key("current-jobs-ready"));
}
