//! Asynchronous uploads and sessions: acknowledged at once, written (and
//! given thumbnails) by a worker; session data shared by the nodes.

use super::*;

/// Sessions through `serve`: create, read from either node, replace,
/// delete; bad ids and methods are refused.
#[tokio::test]
async fn sessions_are_shared_by_the_nodes() {
    let (_dir, s) = start().await;
    let r = s
        .node(0)
        .send(Method::PUT, "/v1/session", &[], "cart=1")
        .await
        .expect("put");
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let set = r.header("set-cookie");
    assert!(set.contains("HttpOnly"), "{set}");
    let cookie = set.split(';').next().expect("cookie").to_owned();
    let get = |i: usize, cookie: String| {
        let c = s.node(i);
        async move {
            c.send(Method::GET, "/v1/session", &[("cookie", &cookie)], vec![])
                .await
                .expect("get")
        }
    };
    let r = get(1, cookie.clone()).await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"cart=1"[..]));
    let r = s
        .client
        .send(Method::PUT, "/v1/session", &[("cookie", &cookie)], "cart=2")
        .await
        .expect("put");
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.headers.get("set-cookie").is_none(), "same session");
    assert_eq!(&get(0, cookie.clone()).await.body[..], b"cart=2");
    for bad in [
        "strata_session=short",
        "strata_session=../../etc",
        "other=1",
    ] {
        assert_eq!(get(0, bad.into()).await.status, StatusCode::NOT_FOUND);
    }
    let r = s
        .client
        .send(Method::POST, "/v1/session", &[("cookie", &cookie)], "x")
        .await
        .expect("post");
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = s
        .client
        .send(
            Method::DELETE,
            "/v1/session",
            &[("cookie", &cookie)],
            vec![],
        )
        .await
        .expect("delete");
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(get(1, cookie).await.status, StatusCode::NOT_FOUND);
}

/// An asynchronous upload through `serve`: 202 with a job, the job reaches
/// `succeeded` with the blob's metadata, the blob is readable; the same
/// Idempotency-Key gives the same job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_upload_is_acknowledged_then_written_by_a_worker() {
    let (_dir, s) = start().await;
    let c = &s.client;
    let body = blob(7, 300_000);
    let put = |key: &'static str| {
        let body = body.clone();
        async move {
            c.send(
                Method::POST,
                key,
                &[
                    ("prefer", "respond-async"),
                    ("content-type", "image/jpeg"),
                    ("idempotency-key", "upload-1"),
                ],
                body,
            )
            .await
            .expect("post")
        }
    };
    let r = put("/v1/blobs/async/cat.jpg").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let loc = r.header("location");
    assert!(loc.starts_with("/v1/jobs/"), "{loc}");
    assert_eq!(r.json()["location"], loc.as_str());
    // The same key again: the same job, not a second one.
    let again = put("/v1/blobs/async/cat.jpg").await;
    assert_eq!(again.header("location"), loc);
    let j = testkit::until_async(
        "the job succeeds",
        std::time::Duration::from_secs(10),
        async || {
            let j = c.get(&loc).await.expect("status").json();
            match j["state"] == "succeeded" {
                true => Ok(j),
                false => Err(j.to_string()),
            }
        },
    )
    .await;
    assert_eq!(j["result"]["key"], "async/cat.jpg");
    assert_eq!(j["result"]["size"], 300_000);
    assert_eq!(j["attempts"], 1);
    let g = c.get("/v1/blobs/async/cat.jpg").await.expect("get");
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.header("content-type"), "image/jpeg");
    assert!(g.body[..] == body[..]);
    assert_eq!(
        c.get("/v1/jobs/999999").await.expect("get").status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.get("/v1/jobs/abc").await.expect("get").status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(s.handle.broker.queue_stats("uploads").expect("q").total, 1);
}

/// An asynchronous upload of a PNG: the upload job queues a thumbnail job,
/// whose worker stores 128 and 512 px wide copies served with `?w=`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_image_upload_gets_its_thumbnails() {
    let (_dir, s) = start().await;
    let c = &s.client;
    let img = image::RgbImage::from_fn(1024, 768, |x, y| image::Rgb([x as u8, y as u8, 99]));
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)
        .expect("encode");
    let r = c
        .send(
            Method::PUT,
            "/v1/blobs/pics/big.png",
            &[("prefer", "respond-async"), ("content-type", "image/png")],
            png.into_inner(),
        )
        .await
        .expect("put");
    assert_eq!(r.status, StatusCode::ACCEPTED);
    for (w, h) in [(128u32, 96u32), (512, 384)] {
        let path = format!("/v1/blobs/pics/big.png?w={w}");
        let r = testkit::until_async(
            "the thumbnail appears",
            std::time::Duration::from_secs(20),
            async || {
                let r = c.get(&path).await.expect("get");
                match r.status {
                    StatusCode::OK => Ok(r),
                    st => {
                        assert_eq!(st, StatusCode::NOT_FOUND);
                        Err(st.to_string())
                    }
                }
            },
        )
        .await;
        assert_eq!(r.header("content-type"), "image/png");
        let t = image::load_from_memory(&r.body).expect("decode");
        assert_eq!((t.width(), t.height()), (w, h));
    }
    assert_eq!(
        c.get("/v1/blobs/pics/big.png?w=0")
            .await
            .expect("get")
            .status,
        StatusCode::BAD_REQUEST
    );
    let orig = c.get("/v1/blobs/pics/big.png").await.expect("get");
    assert_eq!(
        image::load_from_memory(&orig.body).expect("decode").width(),
        1024
    );
}
