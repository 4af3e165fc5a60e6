//! A node in this process as a backend the gateway calls without HTTP:
//! its whole API as a service (the full path), and its blob reads answered
//! directly ([`balancer::direct`]). The gateway knows no blob tier; this is
//! the seam the binary wires.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use balancer::direct::{Direct, DirectReads, FileBody, LocalBackend, Read, Reply, StreamedBody};
use node::direct::{Answer, Ask};
use node::Node;

/// A node's API and direct reads, for the gateway of the same process.
pub fn local_backend(node: Arc<Node>, api: axum::Router) -> LocalBackend {
    LocalBackend {
        service: service(api),
        reads: Some(Arc::new(NodeReads(node))),
    }
}

fn service(api: axum::Router) -> balancer::direct::LocalService {
    let svc = hyper_util::service::TowerToHyperService::new(api);
    Arc::new(move |req: hyper::Request<balancer::body::UpBody>| {
        let call = hyper::service::Service::call(&svc, req.map(axum::body::Body::new));
        Box::pin(async move {
            match call.await {
                Ok(resp) => resp.map(balancer::body::send_body),
                Err(never) => match never {},
            }
        })
    })
}

struct NodeReads(Arc<Node>);

fn reply(node: &Node, a: Answer) -> Reply {
    node.metrics.count_status(a.status());
    let mut r = Reply {
        status: a.status(),
        lines: a.lines(),
        more: a.content_range().map(|r| format!("content-range: {r}\r\n")),
        length: a.length(),
        body: a.body(),
        file: a.extent().map(|x| FileBody {
            file: x.file.clone(),
            offset: x.offset,
            len: x.len,
        }),
        stream: None,
    };
    if let Answer::Stream { body, .. } = a {
        r.stream = Some(StreamedBody(Box::pin(body)));
    }
    r
}

impl DirectReads for NodeReads {
    fn takes(&self, r: &Read<'_>) -> bool {
        r.target.starts_with("/v1/blobs/")
    }

    fn read(&self, r: &Read<'_>) -> Direct {
        let (path, query) = match r.target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (r.target, None),
        };
        if !path.starts_with("/v1/blobs/") {
            return Direct::Declined;
        }
        let node = &self.0;
        let key = match node::direct::blob_key(path, query) {
            Ok(k) => k,
            Err(a) => return Direct::Now(reply(node, a)),
        };
        let ask = Ask {
            head: r.head,
            if_none_match: r.if_none_match,
            range: r.range,
            stream: false,
            extent: true,
            mapped: true,
        };
        if let Some(a) = node.get_now(&key, &ask) {
            return Direct::Now(reply(node, a));
        }
        // Owned for the wait: an index lookup, a remote store.
        let (node, key) = (node.clone(), key.into_owned());
        let (inm, range) = (
            r.if_none_match.map(str::to_owned),
            r.range.map(str::to_owned),
        );
        let head = r.head;
        Direct::Later(Box::pin(async move {
            let ask = Ask {
                head,
                if_none_match: inm.as_deref(),
                range: range.as_deref(),
                stream: false,
                extent: true,
                mapped: true,
            };
            let a = {
                let _busy = InFlight::new(&node.metrics.in_flight);
                node.get(&key, &ask).await
            };
            reply(&node, a)
        }))
    }
}

/// Counts a read in flight for `/load` until it ends, however it ends (the
/// gateway drops a read that outlives its timeout).
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn new(c: &'a AtomicU64) -> InFlight<'a> {
        c.fetch_add(1, Ordering::Relaxed);
        InFlight(c)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
