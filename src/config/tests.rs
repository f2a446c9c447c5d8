use super::*;

const FILE: &str = "test.yaml";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml_str(text, FILE)
}

/// The key and message of an error that must be `BadValue`.
fn bad_value(text: &str) -> (String, String) {
    match parse(text) {
        Err(e @ ConfigError::BadValue { .. }) => {
            let message = e.to_string();
            let ConfigError::BadValue { key, .. } = e else {
                unreachable!()
            };
            assert!(message.starts_with(FILE), "{message}");
            assert!(message.contains(&key), "{message}");
            (key, message)
        }
        other => panic!("expected a bad value, got {other:?}"),
    }
}

fn generated_tls_config() -> Arc<rustls::ServerConfig> {
    Config::default()
        .server_tls(FILE, vec![b"h3".to_vec()])
        .unwrap()
        .config
}

#[test]
fn empty_file_is_the_default_configuration() {
    assert_eq!(parse("").unwrap(), Config::default());
    assert_eq!(parse("# only a comment\n").unwrap(), Config::default());
    assert_eq!(parse("{}").unwrap(), Config::default());
}

#[test]
fn defaults_match_the_documented_values() {
    let c = Config::default();
    assert_eq!(c.server.address, "[::]:4433".parse().unwrap());
    assert_eq!(c.server.shards, 0);
    assert!(c.server.pin_cores);
    assert_eq!(c.server.steering, SteeringMode::Bpf);
    assert!(c.server.gso);
    assert_eq!(c.server.socket_buffer_bytes, 8 << 20);
    assert_eq!(c.server.shutdown_timeout, Duration::from_secs(2));
    assert_eq!(
        c.tls.source(),
        Some(CertificateSource::Generate {
            names: vec!["localhost".into()]
        })
    );
    assert_eq!(c.quic.idle_timeout, Duration::from_secs(30));
    assert_eq!(c.quic.keep_alive, Some(Duration::from_secs(10)));
    assert_eq!(c.quic.max_concurrent_bidi_streams, 128);
    assert_eq!(c.quic.max_concurrent_uni_streams, 256);
    assert_eq!(c.quic.initial_concurrent_streams, 16);
    assert_eq!(c.quic.peer_max_concurrent_bidi_streams, 1024);
    assert_eq!(c.quic.peer_max_concurrent_uni_streams, 1024);
    assert_eq!(c.quic.stream_receive_window, 1 << 20);
    assert_eq!(c.quic.receive_window, 16 << 20);
    assert_eq!(c.quic.send_window, 16 << 20);
    assert_eq!(c.quic.datagram_receive_buffer, 1 << 20);
    assert_eq!(c.relay.group_cache_size, 3);
    assert_eq!(c.relay.max_sessions, 10_000);
    assert_eq!(c.relay.max_subscriptions_per_session, 1024);
    assert_eq!(c.relay.max_announce_prefix_len, 1024);
    assert_eq!(c.relay.max_frame_size, 4 << 20);
    assert_eq!(c.relay.max_cached_bytes_per_track, 64 << 20);
    assert_eq!(c.logging.level, "info");
    assert_eq!(c.admission.retry, RetryMode::Auto);
    assert_eq!(c.admission.retry_above_handshakes, 64);
    assert_eq!(c.admission.max_handshakes_per_shard, 512);
    assert_eq!(c.admission.handshake_timeout, Duration::from_secs(10));
    assert_eq!(c.admission.max_connections_per_ip, 1000);
    assert_eq!(c.admission.handshakes_per_ip_per_second, 100);
    assert_eq!(c.admission.handshake_burst_per_ip, 200);
    assert_eq!(c.admission.max_tracked_ips, 65_536);
    assert_eq!(c.http.max_connections, 64);
    assert_eq!(c.http.max_connections_per_source, 8);
    assert_eq!(c.http.header_timeout, Duration::from_secs(5));
    assert_eq!(c.http.request_timeout, Duration::from_secs(10));
    assert_eq!(c.admin.address, None);
    assert!(c.validate().is_ok());
}

#[test]
fn shipped_config_files_parse_to_the_defaults() {
    // Both files only spell out defaults; a difference means the file or the
    // code drifted.
    for name in ["config.yaml", "config.example.yaml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("configs")
            .join(name);
        let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config, Config::default(), "{name}");
    }
}

/// The keys a section accepts, read back from the unknown-key error, so that
/// the list cannot drift from the structs.
fn accepted_keys(section: Option<&str>) -> Vec<String> {
    let text = match section {
        Some(section) => format!("{section}: {{no_such_key: 1}}"),
        None => "no_such_key: 1".to_string(),
    };
    let Err(ConfigError::UnknownKey { reason, .. }) = parse(&text) else {
        panic!("no_such_key was accepted in {section:?}");
    };
    reason
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn example_lists_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/config.example.yaml");
    let example = std::fs::read_to_string(path).unwrap();
    // A key counts when it starts a line, possibly commented out (the two
    // TLS forms cannot both be active).
    let documented = |key: &str| {
        example.lines().any(|line| {
            let line = line.trim_start().trim_start_matches('#').trim_start();
            line.strip_prefix(key)
                .is_some_and(|rest| rest.starts_with(':'))
        })
    };
    let sections = accepted_keys(None);
    assert_eq!(
        sections,
        [
            "server",
            "tls",
            "quic",
            "admission",
            "relay",
            "logging",
            "http",
            "admin",
            "cluster",
            "auth"
        ]
    );
    for section in &sections {
        assert!(documented(section), "{section}");
        let keys = accepted_keys(Some(section));
        assert!(!keys.is_empty(), "{section}");
        for key in keys {
            assert!(
                documented(&key),
                "{section}.{key} is not in config.example.yaml"
            );
        }
    }
}

#[test]
fn unknown_key_is_refused_with_its_dotted_path() {
    let err = parse("server:\n  adress: \"[::]:1\"\n").unwrap_err();
    assert!(
        matches!(&err, ConfigError::UnknownKey { key, .. } if key == "server.adress"),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with("test.yaml: server.adress: unknown key at line 2"),
        "{message}"
    );
    assert!(
        message.contains("`address`"),
        "suggests the known keys: {message}"
    );
    assert_eq!(err.exit_code(), EX_CONFIG);

    let err = parse("sever: {}\n").unwrap_err();
    assert!(
        matches!(&err, ConfigError::UnknownKey { key, .. } if key == "sever"),
        "{err:?}"
    );
}

#[test]
fn yaml_syntax_error_is_reported_with_its_line() {
    let err = parse("server:\n  address: \"[::]:4433\"\n   shards: 2\n").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("test.yaml: YAML syntax error at line 3"),
        "{message}"
    );
    assert_eq!(
        message.matches("line 3 column 4").count(),
        1,
        "location once: {message}"
    );
    assert_eq!(err.exit_code(), EX_CONFIG);
}

#[test]
fn unparsable_address_names_server_address() {
    let (key, message) = bad_value("server:\n  address: \"not an address\"\n");
    assert_eq!(key, "server.address");
    assert!(message.contains("invalid socket address"), "{message}");
    assert!(message.contains("line 2"), "{message}");
}

#[test]
fn wrong_type_names_the_key() {
    let (key, message) = bad_value("server:\n  gso: maybe\n");
    assert_eq!(key, "server.gso");
    assert!(message.contains("boolean"), "{message}");
    let (key, _) = bad_value("server:\n  shards: -1\n");
    assert_eq!(key, "server.shards");
    let (key, _) = bad_value("quic:\n  max_concurrent_bidi_streams: 5000000000\n");
    assert_eq!(key, "quic.max_concurrent_bidi_streams");
    let (key, _) = bad_value("server: 3\n");
    assert_eq!(key, "server");
    let (key, _) = bad_value("just a string\n");
    assert_eq!(key, "(top level)");
}

#[test]
fn shard_count_above_255_is_refused() {
    let (key, message) = bad_value("server:\n  shards: 1000\n");
    assert_eq!(key, "server.shards");
    assert!(message.contains("at most 255"), "{message}");
    assert_eq!(
        parse("server: {shards: 255}").unwrap().effective_shards(),
        255
    );
}

#[test]
fn zero_shards_mean_one_per_available_core() {
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(Config::default().effective_shards(), cores.min(255));
    assert_eq!(parse("server: {shards: 3}").unwrap().effective_shards(), 3);
}

#[test]
fn steering_takes_kebab_case_names() {
    let c = parse("server: {steering: forward-only}").unwrap();
    assert_eq!(c.server.steering, SteeringMode::ForwardOnly);
    let (key, message) = bad_value("server: {steering: ebpf}");
    assert_eq!(key, "server.steering");
    assert!(message.contains("forward-only"), "{message}");
}

#[test]
fn durations_are_humantime_strings() {
    let c =
        parse("server: {shutdown_timeout: 1m 30s}\nquic: {idle_timeout: 500ms, keep_alive: 100ms}")
            .unwrap();
    assert_eq!(c.server.shutdown_timeout, Duration::from_secs(90));
    assert_eq!(c.quic.idle_timeout, Duration::from_millis(500));
    assert_eq!(c.quic.keep_alive, Some(Duration::from_millis(100)));

    let (key, message) = bad_value("quic: {idle_timeout: soon}");
    assert_eq!(key, "quic.idle_timeout");
    assert!(message.contains("\"soon\""), "{message}");
    let (key, message) = bad_value("quic: {idle_timeout: 30}");
    assert_eq!(key, "quic.idle_timeout");
    assert!(message.contains("duration"), "{message}");
}

#[test]
fn keep_alive_is_disabled_by_off_or_null() {
    for text in [
        "quic: {keep_alive: off}",
        "quic: {keep_alive: null}",
        "quic: {keep_alive: ~}",
    ] {
        assert_eq!(parse(text).unwrap().quic.keep_alive, None, "{text}");
    }
}

#[test]
fn keep_alive_must_be_shorter_than_idle_timeout() {
    let (key, _) = bad_value("quic: {idle_timeout: 10s, keep_alive: 10s}");
    assert_eq!(key, "quic.keep_alive");
    let (key, message) = bad_value("quic: {keep_alive: 0s}");
    assert_eq!(key, "quic.keep_alive");
    assert!(message.contains("off"), "{message}");
}

#[test]
fn zero_idle_timeout_is_refused() {
    let (key, _) = bad_value("quic: {idle_timeout: 0s, keep_alive: off}");
    assert_eq!(key, "quic.idle_timeout");
}

#[test]
fn byte_sizes_take_integers_and_binary_units() {
    let c = parse(
        "server: {socket_buffer_bytes: 65536}\n\
         quic: {stream_receive_window: 64 KiB, receive_window: 2MiB, send_window: 1 GiB, datagram_receive_buffer: 512 B}",
    )
    .unwrap();
    assert_eq!(c.server.socket_buffer_bytes, 65536);
    assert_eq!(c.quic.stream_receive_window, 64 << 10);
    assert_eq!(c.quic.receive_window, 2 << 20);
    assert_eq!(c.quic.send_window, 1 << 30);
    assert_eq!(c.quic.datagram_receive_buffer, 512);
}

#[test]
fn decimal_and_unknown_units_are_refused() {
    for text in [
        "8 MB",
        "8 mib",
        "lots",
        "-1 KiB",
        "",
        "99999999999999999999 GiB",
    ] {
        assert_eq!(de::parse_bytes(text), None, "{text}");
    }
    let (key, message) = bad_value("quic: {receive_window: 16 MB}");
    assert_eq!(key, "quic.receive_window");
    assert!(message.contains("\"16 MB\""), "{message}");
    let (key, _) = bad_value("quic: {receive_window: -5}");
    assert_eq!(key, "quic.receive_window");
}

#[test]
fn windows_must_be_positive_and_fit_their_wire_types() {
    for key in ["stream_receive_window", "receive_window", "send_window"] {
        let (got, _) = bad_value(&format!("quic: {{{key}: 0}}"));
        assert_eq!(got, format!("quic.{key}"));
    }
    let (key, _) = bad_value("quic: {receive_window: 4294967296}");
    assert_eq!(key, "quic.receive_window");
    assert_eq!(
        parse("quic: {receive_window: 4294967295}")
            .unwrap()
            .quic
            .receive_window,
        u64::from(u32::MAX)
    );
    let (key, _) = bad_value("quic: {send_window: 4611686018427387904}");
    assert_eq!(key, "quic.send_window");
    let (key, _) = bad_value("quic: {max_concurrent_uni_streams: 0}");
    assert_eq!(key, "quic.max_concurrent_uni_streams");
    let (key, _) = bad_value("quic: {initial_concurrent_streams: 0}");
    assert_eq!(key, "quic.initial_concurrent_streams");
    // A relay peer earns more streams than a client, never fewer.
    let (key, _) = bad_value("quic: {max_concurrent_bidi_streams: 2000}");
    assert_eq!(key, "quic.peer_max_concurrent_bidi_streams");
    let (key, _) = bad_value("quic: {peer_max_concurrent_uni_streams: 100}");
    assert_eq!(key, "quic.peer_max_concurrent_uni_streams");
    let (key, _) = bad_value("server: {socket_buffer_bytes: 4 GiB}");
    assert_eq!(key, "server.socket_buffer_bytes");
}

#[test]
fn relay_limits_must_be_at_least_one() {
    for key in [
        "group_cache_size",
        "max_sessions",
        "max_subscriptions_per_session",
        "max_announce_prefix_len",
        "max_frame_size",
        "max_cached_bytes_per_track",
        "max_frames_per_group",
        "max_broadcasts_per_session",
        "max_announce_requests_per_session",
        "max_announce_backlog",
    ] {
        let (got, _) = bad_value(&format!("relay: {{{key}: 0}}"));
        assert_eq!(got, format!("relay.{key}"));
    }
}

#[test]
fn frame_larger_than_the_track_cache_is_refused() {
    let (key, message) =
        bad_value("relay: {max_frame_size: 2 MiB, max_cached_bytes_per_track: 1 MiB}");
    assert_eq!(key, "relay.max_frame_size");
    assert!(message.contains("max_cached_bytes_per_track"), "{message}");
}

#[test]
fn both_tls_forms_are_refused() {
    let (key, message) =
        bad_value("tls: {generate: [localhost], cert_file: c.pem, key_file: k.pem}");
    assert_eq!(key, "tls");
    assert!(message.contains("not both"), "{message}");
}

#[test]
fn empty_tls_section_is_refused() {
    let (key, _) = bad_value("tls: {}");
    assert_eq!(key, "tls");
    let (key, _) = bad_value("tls: {generate: []}");
    assert_eq!(key, "tls.generate");
}

#[test]
fn generated_certificate_names_must_be_hosts_or_addresses() {
    for bad in ["\"bad name\"", "\"\"", "\"é.example\"", "a..b", "\"-x:1\""] {
        let (key, _) = bad_value(&format!("tls: {{generate: [{bad}]}}"));
        assert_eq!(key, "tls.generate", "{bad}");
    }
    let good =
        "tls: {generate: [localhost, relay.example.com, \"*.example.com\", 127.0.0.1, \"::1\"]}";
    assert_eq!(
        parse(good).unwrap().certificate_source(),
        Some(CertificateSource::Generate {
            names: [
                "localhost",
                "relay.example.com",
                "*.example.com",
                "127.0.0.1",
                "::1"
            ]
            .map(String::from)
            .to_vec()
        })
    );
}

#[test]
fn certificate_without_key_is_refused() {
    let (key, _) = bad_value("tls: {cert_file: c.pem}");
    assert_eq!(key, "tls.key_file");
    let (key, _) = bad_value("tls: {key_file: k.pem}");
    assert_eq!(key, "tls.cert_file");
}

#[test]
fn pem_files_replace_the_default_generated_certificate() {
    let c = parse("tls: {cert_file: c.pem, key_file: k.pem}").unwrap();
    assert_eq!(
        c.certificate_source(),
        Some(CertificateSource::Files {
            cert_file: "c.pem".into(),
            key_file: "k.pem".into()
        })
    );
}

#[test]
fn missing_certificate_file_is_no_input_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("missing-cert.pem");
    let text = format!(
        "tls: {{cert_file: {:?}, key_file: k.pem}}",
        cert.display().to_string()
    );
    let err = parse(&text).unwrap().server_tls(FILE, vec![]).unwrap_err();
    assert_eq!(err.exit_code(), EX_NOINPUT);
    let message = err.to_string();
    assert!(
        message.starts_with("test.yaml: tls.cert_file: "),
        "{message}"
    );
    assert!(message.contains("missing-cert.pem"), "{message}");
}

#[test]
fn unusable_key_file_is_a_config_error_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key_pair)
        .unwrap();
    let cert_file = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, "not a key\n").unwrap();
    let text = format!(
        "tls: {{cert_file: {:?}, key_file: {:?}}}",
        cert_file.display().to_string(),
        key_file.display().to_string()
    );
    let err = parse(&text).unwrap().server_tls(FILE, vec![]).unwrap_err();
    assert_eq!(err.exit_code(), EX_CONFIG);
    let message = err.to_string();
    assert!(
        message.starts_with("test.yaml: tls.key_file: "),
        "{message}"
    );
    assert!(message.contains("key.pem"), "{message}");
}

#[test]
fn invalid_log_level_is_refused() {
    let (key, _) = bad_value("logging: {level: \"qumo=loud\"}");
    assert_eq!(key, "logging.level");
    assert_eq!(
        parse("logging: {level: \"qumo=debug,info\"}")
            .unwrap()
            .logging
            .level,
        "qumo=debug,info"
    );
}

#[test]
fn missing_config_file_is_no_input_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.yaml");
    let err = Config::load(&path).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
    assert_eq!(err.exit_code(), EX_NOINPUT);
    assert!(err.to_string().contains("nope.yaml"), "{err}");
}

#[test]
fn runtime_config_maps_every_field() {
    let c = parse(
        "server:\n  address: \"127.0.0.1:9000\"\n  shards: 7\n  pin_cores: false\n  steering: forward-only\n  gso: false\n  socket_buffer_bytes: 1 MiB\n  shutdown_timeout: 5s\n\
         quic:\n  idle_timeout: 20s\n  keep_alive: 3s\n  max_concurrent_bidi_streams: 10\n  max_concurrent_uni_streams: 20\n  initial_concurrent_streams: 5\n  stream_receive_window: 100\n  receive_window: 200\n  send_window: 300\n  datagram_receive_buffer: 400\n",
    )
    .unwrap();
    let tls = generated_tls_config();
    let rt = c.runtime_config(tls.clone());
    assert_eq!(rt.listen, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(rt.shards, 7);
    assert!(!rt.pin_cores);
    assert_eq!(rt.steering, qumo_shards::Steering::ForwardOnly);
    assert!(!rt.gso);
    assert_eq!(rt.socket_buffer_bytes, 1 << 20);
    assert_eq!(rt.shutdown_timeout, Duration::from_secs(5));
    assert_eq!(rt.quic.idle_timeout, Duration::from_secs(20));
    assert_eq!(rt.quic.keep_alive, Some(Duration::from_secs(3)));
    assert_eq!(rt.quic.max_concurrent_bidi_streams, 10);
    assert_eq!(rt.quic.max_concurrent_uni_streams, 20);
    assert_eq!(rt.quic.initial_concurrent_streams, 5);
    assert_eq!(rt.quic.stream_receive_window, 100);
    assert_eq!(rt.quic.receive_window, 200);
    assert_eq!(rt.quic.send_window, 300);
    assert_eq!(rt.quic.datagram_receive_buffer, Some(400));
    assert!(Arc::ptr_eq(rt.server_tls.as_ref().unwrap(), &tls));
}

#[test]
fn default_runtime_config_matches_the_runtime_defaults() {
    let rt = Config::default().runtime_config(generated_tls_config());
    let limits = qumo_shards::QuicLimits::default();
    assert_eq!(format!("{:?}", rt.quic), format!("{limits:?}"));
    assert_eq!(rt.steering, qumo_shards::Steering::Bpf);
    assert!(rt.pin_cores);
}

#[test]
fn zero_datagram_buffer_disables_datagrams() {
    let c = parse("quic: {datagram_receive_buffer: 0}").unwrap();
    assert_eq!(
        c.runtime_config(generated_tls_config())
            .quic
            .datagram_receive_buffer,
        None
    );
}

#[test]
fn every_error_message_names_the_file() {
    let cases = [
        "server: [\n",
        "bogus: 1\n",
        "server: {address: nope}\n",
        "server: {shards: 256}\n",
    ];
    for text in cases {
        let err = parse(text).unwrap_err();
        assert!(err.to_string().starts_with("test.yaml: "), "{err}");
        assert_eq!(err.exit_code(), EX_CONFIG, "{err}");
    }
}

#[test]
fn latency_ceiling_below_the_default_is_refused() {
    let (key, message) = bad_value("relay: {default_max_latency: 5s, max_latency_ceiling: 2s}");
    assert_eq!(key, "relay.max_latency_ceiling");
    assert!(message.contains("default_max_latency"), "{message}");
}

#[test]
fn frame_buffer_smaller_than_a_frame_is_refused() {
    let (key, message) =
        bad_value("relay: {max_frame_size: 2 MiB, max_buffered_frame_bytes_per_session: 1 MiB}");
    assert_eq!(key, "relay.max_buffered_frame_bytes_per_session");
    assert!(message.contains("max_frame_size"), "{message}");
}

#[test]
fn zero_setup_timeout_is_refused() {
    let (key, _) = bad_value("relay: {setup_timeout: 0s}");
    assert_eq!(key, "relay.setup_timeout");
}

#[test]
fn zero_fetch_timeout_is_refused() {
    let (key, _) = bad_value("relay: {fetch_timeout: 0s}");
    assert_eq!(key, "relay.fetch_timeout");
    assert_eq!(
        Config::default().relay.fetch_timeout,
        Duration::from_secs(10)
    );
}

#[test]
fn hardening_defaults_bound_what_a_peer_controls() {
    let r = Config::default().relay;
    assert_eq!(r.max_latency_ceiling, Duration::from_secs(10));
    assert_eq!(r.max_frames_per_group, 16_384);
    assert_eq!(r.max_broadcasts_per_session, 1024);
    assert_eq!(r.max_announce_requests_per_session, 64);
    assert_eq!(r.max_announce_backlog, 4096);
    assert_eq!(r.max_buffered_frame_bytes_per_session, 16 << 20);
    assert_eq!(r.setup_timeout, Duration::from_secs(10));
    assert_eq!(r.max_mesh_backlog, 32 << 20);
    let (key, _) = bad_value("relay: {max_frame_size: 2 MiB, max_mesh_backlog: 1 MiB}");
    assert_eq!(key, "relay.max_mesh_backlog");
}

#[test]
fn http_bounds_are_range_checked() {
    for (text, key) in [
        ("http: {max_connections: 0}", "http.max_connections"),
        ("http: {max_connections: 65537}", "http.max_connections"),
        (
            "http: {max_connections_per_source: 0}",
            "http.max_connections_per_source",
        ),
        (
            "http: {max_connections: 4, max_connections_per_source: 5}",
            "http.max_connections_per_source",
        ),
        ("http: {request_timeout: 0s}", "http.request_timeout"),
        ("http: {request_timeout: 301s}", "http.request_timeout"),
        ("http: {header_timeout: 0s}", "http.header_timeout"),
        (
            "http: {header_timeout: 20s, request_timeout: 10s}",
            "http.header_timeout",
        ),
    ] {
        let (got, message) = bad_value(text);
        assert_eq!(got, key, "{text}: {message}");
    }
    let (_, message) = bad_value("http: {header_timeout: 20s, request_timeout: 10s}");
    assert!(message.contains("http.request_timeout (10s)"), "{message}");
    let c =
        parse("http: {max_connections: 65536, header_timeout: 1s, request_timeout: 5m}").unwrap();
    assert_eq!(c.http.limits().max_connections, 65536);
    assert_eq!(c.http.limits().request_timeout, Duration::from_secs(300));
}

#[test]
fn admin_address_is_off_by_default_and_parsed_when_set() {
    assert_eq!(parse("admin: {address: null}").unwrap().admin.address, None);
    assert_eq!(
        parse("admin: {address: \"127.0.0.1:9090\"}")
            .unwrap()
            .admin
            .address,
        Some("127.0.0.1:9090".parse().unwrap())
    );
    let (key, _) = bad_value("admin: {address: \"localhost:9090\"}");
    assert_eq!(key, "admin.address");
}

#[test]
fn admission_keys_map_to_the_runtime() {
    let c = parse(
        "admission:\n  retry: always\n  retry_above_handshakes: 3\n  max_handshakes_per_shard: 9\n  handshake_timeout: 4s\n  max_connections_per_ip: 5\n  handshakes_per_ip_per_second: 6\n  handshake_burst_per_ip: 7\n  max_tracked_ips: 100\n\
         relay:\n  max_sessions: 42\n",
    )
    .unwrap();
    let a = c.runtime_config(generated_tls_config()).admission;
    assert_eq!(a.retry, qumo_shards::RetryPolicy::Always);
    assert_eq!(a.retry_above_handshakes, 3);
    assert_eq!(a.max_handshakes_per_shard, 9);
    assert_eq!(a.handshake_timeout, Duration::from_secs(4));
    assert_eq!(a.max_connections_per_source, 5);
    assert_eq!(a.handshakes_per_source_per_second, 6);
    assert_eq!(a.handshake_burst_per_source, 7);
    assert_eq!(a.max_tracked_sources, 100);
    // The runtime refuses over relay.max_sessions before any TLS work.
    assert_eq!(a.max_connections, 42);
    for (text, policy) in [
        ("never", qumo_shards::RetryPolicy::Never),
        ("auto", qumo_shards::RetryPolicy::Auto),
    ] {
        let c = parse(&format!("admission: {{retry: {text}}}")).unwrap();
        assert_eq!(c.admission_limits().retry, policy);
    }
}

#[test]
fn default_admission_matches_the_runtime_defaults() {
    let expected = qumo_shards::AdmissionLimits {
        max_connections: Config::default().relay.max_sessions,
        ..Default::default()
    };
    assert_eq!(
        format!("{:?}", Config::default().admission_limits()),
        format!("{expected:?}")
    );
}

#[test]
fn bad_admission_values_are_refused_naming_the_key() {
    for (text, key) in [
        ("admission: {retry: sometimes}", "admission.retry"),
        (
            "admission: {max_handshakes_per_shard: 0}",
            "admission.max_handshakes_per_shard",
        ),
        (
            "admission: {max_connections_per_ip: 0}",
            "admission.max_connections_per_ip",
        ),
        (
            "admission: {handshakes_per_ip_per_second: 0}",
            "admission.handshakes_per_ip_per_second",
        ),
        (
            "admission: {handshake_burst_per_ip: 0}",
            "admission.handshake_burst_per_ip",
        ),
        (
            "admission: {handshakes_per_ip_per_second: -1}",
            "admission.handshakes_per_ip_per_second",
        ),
        (
            "admission: {handshake_timeout: 0s}",
            "admission.handshake_timeout",
        ),
        (
            "admission: {handshake_timeout: soon}",
            "admission.handshake_timeout",
        ),
        (
            "admission: {max_tracked_ips: 15}",
            "admission.max_tracked_ips",
        ),
    ] {
        let (got, message) = bad_value(text);
        assert_eq!(got, key, "{text}: {message}");
    }
    parse("admission: {retry_above_handshakes: 0}").unwrap();
}

#[test]
fn a_retry_threshold_above_the_handshake_cap_acts_as_the_cap() {
    // Lowering the cap alone must not make the default threshold an error,
    // nor leave auto unable to send a Retry before Initials are dropped.
    let c = parse("admission: {max_handshakes_per_shard: 10}").unwrap();
    assert_eq!(c.admission.retry_above_handshakes, 64);
    assert_eq!(c.admission_limits().retry_above_handshakes, 10);
}

fn go_layout(name: &str) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs")
        .join(name);
    Config::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn certificate_files(c: &Config) -> Option<CertificateSource> {
    c.certificate_source()
}

#[test]
fn go_relay_layout_with_a_tls_section_loads_as_it_is() {
    let c = go_layout("go-relay-tls-section.yaml");
    assert_eq!(c.server.address, "0.0.0.0:4433".parse().unwrap());
    assert_eq!(
        certificate_files(&c),
        Some(CertificateSource::Files {
            cert_file: "certs/server.crt".into(),
            key_file: "certs/server.key".into(),
        })
    );
    assert_eq!(c.relay.frame_capacity, 1500);
    assert_eq!(c.relay.group_cache_size, 100);
    // Everything else keeps qumo's defaults.
    assert_eq!(c.quic, QuicConfig::default());
    assert_eq!(c.logging, LoggingConfig::default());
}

#[test]
fn go_relay_flat_layout_loads_as_it_is() {
    let c = go_layout("go-relay-flat.yaml");
    assert_eq!(c.server.address, "0.0.0.0:4433".parse().unwrap());
    assert_eq!(
        certificate_files(&c),
        Some(CertificateSource::Files {
            cert_file: "certs/server.crt".into(),
            key_file: "certs/server.key".into(),
        })
    );
    assert_eq!(c.relay.frame_capacity, 1500);
    assert_eq!(c.relay.group_cache_size, 100);
    assert_eq!(c.relay.upstream_url, None, "empty means none");
    assert_eq!(c.logging.level, "debug");
}

#[test]
fn go_spellings_are_aliases_of_qumos_own_keys() {
    let go = parse("relay: {FrameCapacity: 2048, MaxGroupCache: 7}").unwrap();
    let own = parse("relay: {frame_capacity: 2048, group_cache_size: 7}").unwrap();
    assert_eq!(go, own);
    // A spelling of neither is still refused.
    assert!(matches!(
        parse("relay: {frameCapacity: 1}"),
        Err(ConfigError::UnknownKey { .. })
    ));
    assert!(matches!(
        parse("server: {tls: {cert_file: a, key_file: b, ca_file: c}}"),
        Err(ConfigError::UnknownKey { key, .. }) if key == "server.tls.ca_file"
    ));
}

#[test]
fn an_upstream_url_is_parsed_and_an_empty_one_means_none() {
    assert!(parse("relay: {upstream_url: \"https://origin:4433\"}").is_ok());
    let (key, message) = bad_value("relay: {upstream_url: \"ftp://origin:4433\"}");
    assert_eq!(key, "relay.upstream_url");
    assert!(message.contains("scheme"), "{message}");
    assert!(parse("relay: {upstream_url: \"\"}").is_ok());
    assert!(parse("relay: {upstream_url: null}").is_ok());
}

#[test]
fn frame_capacity_takes_any_byte_count() {
    assert_eq!(Config::default().relay.frame_capacity, 64 << 10);
    assert_eq!(
        parse("relay: {frame_capacity: 0}")
            .unwrap()
            .relay
            .frame_capacity,
        0
    );
    // Above the largest frame it only acts as that: a small
    // max_frame_size must not need frame_capacity lowered too.
    let c = parse("relay: {max_frame_size: 1 KiB}").unwrap();
    assert_eq!(c.relay.frame_capacity, 64 << 10);
    let (key, _) = bad_value("relay: {frame_capacity: lots}");
    assert_eq!(key, "relay.frame_capacity");
}

#[test]
fn the_certificate_set_in_two_places_is_refused() {
    let (key, message) = bad_value(
        "server: {cert_file: a.pem, key_file: b.pem}\ntls: {cert_file: c.pem, key_file: d.pem}",
    );
    assert_eq!(key, "tls");
    assert!(message.contains("server.cert_file/key_file"), "{message}");
    let (key, _) = bad_value(
        "server: {cert_file: a.pem, key_file: b.pem, tls: {cert_file: c.pem, key_file: d.pem}}",
    );
    assert_eq!(key, "server.cert_file");
    // Half a pair in the Go layout is reported like half a pair in tls.
    let (key, _) = bad_value("server: {cert_file: a.pem}");
    assert_eq!(key, "tls.key_file");
}

fn env(list: &[(&str, &str)]) -> Vec<Override> {
    Override::from_env(list.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

#[test]
fn environment_variables_override_the_file() {
    let overrides = env(&[
        ("QUMO_RELAY__GROUP_CACHE_SIZE", "9"),
        ("QUMO_SERVER__ADDRESS", "[::1]:5000"),
        ("QUMO_SERVER__PIN_CORES", "false"),
        ("QUMO_TLS__GENERATE", "[example.org, 10.0.0.1]"),
        ("QUMO_ADMIN__ADDRESS", "127.0.0.1:9090"),
        ("QUMO_QUIC__RECEIVE_WINDOW", "2 MiB"),
    ]);
    let c =
        Config::from_yaml_str_with("relay:\n  group_cache_size: 4\n", FILE, &overrides).unwrap();
    assert_eq!(c.relay.group_cache_size, 9);
    assert_eq!(c.server.address, "[::1]:5000".parse().unwrap());
    assert!(!c.server.pin_cores);
    assert_eq!(
        c.tls.generate,
        Some(vec!["example.org".to_string(), "10.0.0.1".to_string()])
    );
    assert_eq!(c.admin.address, Some("127.0.0.1:9090".parse().unwrap()));
    assert_eq!(c.quic.receive_window, 2 << 20);
    // An empty file takes them too.
    let c = Config::from_yaml_str_with("", FILE, &overrides).unwrap();
    assert_eq!(c.relay.group_cache_size, 9);
}

#[test]
fn a_flag_wins_over_the_environment() {
    let mut overrides = env(&[("QUMO_RELAY__GROUP_CACHE_SIZE", "9")]);
    overrides.push(Override::from_flag("relay.group_cache_size=11").unwrap());
    let c = Config::from_yaml_str_with("", FILE, &overrides).unwrap();
    assert_eq!(c.relay.group_cache_size, 11);
}

#[test]
fn a_bad_environment_value_is_an_error_naming_the_variable() {
    let cases = [
        (
            "QUMO_RELAY__GROUP_CACHE_SIZE",
            "lots",
            "relay.group_cache_size",
        ),
        (
            "QUMO_RELAY__GROUP_CACHE_SIZE",
            "0",
            "relay.group_cache_size",
        ),
        ("QUMO_SERVER__ADDRESS", "nowhere", "server.address"),
        ("QUMO_RELAY__NO_SUCH_KEY", "1", "relay.no_such_key"),
        ("QUMO_NO_SUCH_SECTION__KEY", "1", "no_such_section"),
    ];
    for (name, value, key) in cases {
        let err =
            Config::from_yaml_str_with("logging: {level: info}\n", FILE, &env(&[(name, value)]))
                .unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("environment variable {name}: {key}")),
            "{name}={value}: {message}"
        );
        assert_eq!(err.exit_code(), EX_CONFIG, "{message}");
    }
    // An error elsewhere still names the file.
    let err = Config::from_yaml_str_with(
        "relay: {max_sessions: 0}\n",
        FILE,
        &env(&[("QUMO_RELAY__GROUP_CACHE_SIZE", "2")]),
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with("test.yaml: relay.max_sessions"),
        "{err}"
    );
}

#[test]
fn a_flag_that_names_no_key_is_refused_naming_the_flag() {
    let overrides = [Override::from_flag("relay..frame_capacity=1").unwrap()];
    let err = Config::from_yaml_str_with("", FILE, &overrides).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("--set relay..frame_capacity: relay..frame_capacity: unknown key"),
        "{err}"
    );
}

#[test]
fn no_auth_section_is_an_open_relay() {
    let config = parse("").unwrap();
    assert_eq!(config.auth, None);
    assert!(config.auth(FILE).unwrap().is_none());
}

#[test]
fn an_auth_section_must_name_a_key_or_public_prefixes() {
    let (key, message) = bad_value("auth: {}\n");
    assert_eq!(key, "auth");
    assert!(message.contains("auth.key_file"), "{message}");
    let (key, _) = bad_value("auth: {key_file: \"\"}\n");
    assert_eq!(key, "auth.key_file");
    let config = parse("auth: {public: [anon, \"\"]}\n").unwrap();
    assert_eq!(
        config.auth.as_ref().unwrap().public,
        ["anon".to_string(), String::new()]
    );
    assert!(config.auth(FILE).unwrap().is_some());
}

#[test]
fn missing_auth_key_file_is_no_input_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.jwk");
    let text = format!("auth: {{key_file: {:?}}}", missing.display().to_string());
    let err = parse(&text).unwrap().auth(FILE).unwrap_err();
    assert_eq!(err.exit_code(), EX_NOINPUT);
    let message = err.to_string();
    assert!(
        message.starts_with("test.yaml: auth.key_file: "),
        "{message}"
    );
    assert!(message.contains("missing.jwk"), "{message}");
}

#[test]
fn unusable_auth_key_is_a_config_error_that_names_the_file_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.jwk");
    std::fs::write(&junk, "not a key\n").unwrap();
    let sign_only = dir.path().join("sign-only.jwk");
    moq_token::Key::generate(moq_token::Algorithm::HS256, None)
        .unwrap()
        .with_operations([moq_token::KeyOperation::Sign])
        .to_file(&sign_only)
        .unwrap();
    for (path, reason) in [(&junk, "not a JWK key"), (&sign_only, "verify")] {
        let text = format!("auth: {{key_file: {:?}}}", path.display().to_string());
        let err = parse(&text).unwrap().auth(FILE).unwrap_err();
        assert_eq!(err.exit_code(), EX_CONFIG);
        let message = err.to_string();
        assert!(
            message.starts_with("test.yaml: auth.key_file: "),
            "{message}"
        );
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains(reason), "{message}");
    }
}

#[test]
fn a_generated_key_file_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("root.jwk");
    moq_token::Key::generate(moq_token::Algorithm::ES256, None)
        .unwrap()
        .to_public()
        .unwrap()
        .to_file(&path)
        .unwrap();
    let text = format!("auth: {{key_file: {:?}}}", path.display().to_string());
    assert!(parse(&text).unwrap().auth(FILE).unwrap().is_some());
}
