//! The fuzz properties on stable: proptest-generated inputs, then every
//! file of the committed fuzz corpora (`fuzz/corpus/<target>/`), which
//! holds the inputs libFuzzer found interesting, crashes included once
//! fixed.

use proptest::prelude::*;

fn corpus(target: &str, check: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        check(&data);
        n += 1;
    }
    assert!(n > 0, "empty corpus {}", dir.display());
}

#[test]
fn corpora_replay() {
    corpus("memcached", fuzzing::memcached);
    corpus("beanstalk", fuzzing::beanstalk);
    corpus("range", fuzzing::range);
    corpus("config", fuzzing::config);
}

#[test]
fn volume_corpus_replays() {
    corpus("volume", fuzzing::volume);
}

/// Lines that look like protocol commands reach deeper than random bytes.
fn memcached_lines() -> impl Strategy<Value = Vec<u8>> {
    let word = prop_oneof![
        Just("set".to_owned()),
        Just("get".to_owned()),
        Just("gat".to_owned()),
        Just("cas".to_owned()),
        Just("incr".to_owned()),
        Just("delete".to_owned()),
        Just("mg".to_owned()),
        Just("ms".to_owned()),
        Just("noreply".to_owned()),
        "[a-z]{1,4}",
        "[0-9]{1,5}",
        "-?[0-9]{1,20}",
    ];
    prop::collection::vec(prop::collection::vec(word, 1..6), 1..4).prop_flat_map(|lines| {
        let text: Vec<u8> = lines
            .iter()
            .flat_map(|l| format!("{}\r\n", l.join(" ")).into_bytes())
            .collect();
        (Just(text), prop::collection::vec(any::<u8>(), 0..40)).prop_map(|(mut t, tail)| {
            t.extend(tail);
            t
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn memcached_commands(data in memcached_lines()) {
        fuzzing::memcached(&data);
    }

    #[test]
    fn memcached_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
        fuzzing::memcached(&data);
    }

    #[test]
    fn beanstalk_lines(line in "(put|use|release|bury|watch|ignore|kick|peek|stats-tube|delete|reserve-with-timeout|quit|x)( [0-9a-z+-]{0,22}){0,5}") {
        fuzzing::beanstalk(line.as_bytes());
    }

    #[test]
    fn beanstalk_bytes(data in prop::collection::vec(any::<u8>(), 0..64)) {
        fuzzing::beanstalk(&data);
    }

    #[test]
    fn ranges(size in any::<u8>(), value in "(bytes=)?[ ]?[0-9]{0,21}[ ]?-?[0-9]{0,21}(,[0-9]-)?") {
        let mut data = vec![1, size];
        data.extend_from_slice(value.as_bytes());
        fuzzing::range(&data);
    }

    #[test]
    fn configs(text in "(replicas = [0-9]\n)?(\\[auth\\]\nsecret = \"[a-z ]{0,3}\"\n)?(\\[cache\\]\nmemory_mb = [0-9]{1,3}\nbounded_load = [0-9.]{1,4}\n)?(\\[\\[member\\]\\]\nname = \"[a-z]{0,2}\"\nrole = \"(store|index|node)\"\naddr = \"127.0.0.1:[0-9]{1,5}\"\n(data_dir = \"/d\"\n)?){0,3}") {
        fuzzing::config(text.as_bytes());
    }
}

proptest! {
    // Each case writes a real store (fsyncs included): fewer cases.
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn volume_recovery(data in prop::collection::vec(any::<u8>(), 0..2000)) {
        fuzzing::volume(&data);
    }
}
