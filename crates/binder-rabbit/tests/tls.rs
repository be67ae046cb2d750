//! TLS (`spring.rabbitmq.ssl.*`) against a RabbitMQ node this test starts itself, on ports of
//! its own, with a TLS listener that requires a client certificate and a CA the test generates
//! (openssl CLI). The shared node at 5672 is not touched.
//!
//! Proves: a trusted CA (PEM, or a PKCS12 trust store) connects and the broker sees the client
//! certificate (PEM bundle, or PKCS12); an unknown CA is refused with an error that says so; and
//! without a client certificate the broker refuses, so the certificate is what got us in.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use binder_rabbit::stream_config::Environment;
use binder_rabbit::{RabbitBinderFactory, StreamApp};

const IGNORE: &str =
    "needs rabbitmq-server, openssl and keytool installed; run with cargo xtask itest";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new("openssl").current_dir(dir).args(args));
}

/// A CA, a server certificate for localhost / 127.0.0.1, a client certificate (PEM bundle and
/// PKCS12), a PKCS12 trust store, and an unrelated CA.
fn certificates(dir: &Path) {
    let days = ["-days", "2"];
    for (name, cn) in [("ca", "stream-rs test CA"), ("other", "unknown CA")] {
        openssl(
            dir,
            &[
                &["req", "-x509", "-newkey", "rsa:2048", "-nodes"][..],
                &[
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.pem"),
                ],
                &days,
                &["-subj", &format!("/CN={cn}")],
            ]
            .concat(),
        );
    }
    // X.509 v3 (with extensions): webpki refuses v1 certificates.
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("write");
    for (name, cn) in [("server", "localhost"), ("client", "stream-rs client")] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            "",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "",
            "-days",
            "2",
        ];
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let ext = format!("{name}.ext");
        args[3] = &csr;
        args[10] = &pem;
        args.extend(["-extfile", &ext]);
        openssl(dir, &args);
    }
    let bundle = [
        std::fs::read(dir.join("client.pem")).expect("client.pem"),
        std::fs::read(dir.join("client.key")).expect("client.key"),
    ]
    .concat();
    std::fs::write(dir.join("client-bundle.pem"), bundle).expect("write");
    openssl(
        dir,
        &[
            "pkcs12",
            "-export",
            "-in",
            "client.pem",
            "-inkey",
            "client.key",
            "-out",
            "client.p12",
            "-passout",
            "pass:secret",
        ],
    );
    // Java trust stores, as a Spring service has them: PKCS12 and JKS, made by keytool.
    for (file, kind) in [("trust.p12", "PKCS12"), ("trust.jks", "JKS")] {
        run(Command::new("keytool").current_dir(dir).args([
            "-importcert",
            "-noprompt",
            "-alias",
            "ca",
            "-file",
            "ca.pem",
            "-keystore",
            file,
            "-storetype",
            kind,
            "-storepass",
            "secret",
        ]));
    }
}

/// A private RabbitMQ node with only a TLS listener; stopped and removed on drop.
struct Node {
    dir: PathBuf,
    name: String,
    tls_port: u16,
    child: Child,
}

fn as_rabbitmq(program: &str) -> Command {
    // The packaged scripts expect to run as `rabbitmq` (the data dir is theirs); as root, drop
    // to that user without a login shell so the node's environment is kept.
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    if is_root {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=rabbitmq",
            "--regid=rabbitmq",
            "--clear-groups",
            program,
        ]);
        c
    } else {
        Command::new(program)
    }
}

impl Node {
    fn start(dir: &Path) -> Node {
        let tls_port = free_port();
        let name = format!("streamrs-tls-{}@localhost", std::process::id());
        for sub in ["mnesia", "log", "home"] {
            std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
        }
        std::fs::write(dir.join("plugins"), "[].\n").expect("write");
        let d = dir.display();
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!(
                "listeners.tcp = none\n\
                 listeners.ssl.default = 127.0.0.1:{tls_port}\n\
                 ssl_options.cacertfile = {d}/ca.pem\n\
                 ssl_options.certfile = {d}/server.pem\n\
                 ssl_options.keyfile = {d}/server.key\n\
                 ssl_options.verify = verify_peer\n\
                 ssl_options.fail_if_no_peer_cert = true\n\
                 loopback_users = none\n"
            ),
        )
        .expect("write");
        let _ = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(dir)
            .status();
        let child = as_rabbitmq("/usr/lib/rabbitmq/bin/rabbitmq-server")
            .envs(Self::env(dir, &name))
            .env("RABBITMQ_NODE_PORT", free_port().to_string())
            .env("RABBITMQ_DIST_PORT", free_port().to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rabbitmq-server");
        let node = Node {
            dir: dir.to_owned(),
            name,
            tls_port,
            child,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the TLS node did not start; see {}/log",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        node
    }

    fn env(dir: &Path, name: &str) -> Vec<(String, String)> {
        vec![
            ("RABBITMQ_NODENAME".to_owned(), name.to_owned()),
            ("HOME".to_owned(), dir.join("home").display().to_string()),
        ]
    }

    fn ctl(&self, args: &[&str]) -> String {
        let out = as_rabbitmq("/usr/lib/rabbitmq/bin/rabbitmqctl")
            .envs(Self::env(&self.dir, &self.name))
            .args(["-q", "-n", &self.name])
            .args(args)
            .output()
            .expect("rabbitmqctl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = as_rabbitmq("/usr/lib/rabbitmq/bin/rabbitmqctl")
            .envs(Self::env(&self.dir, &self.name))
            .args(["-q", "-n", &self.name, "stop"])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Builds an app whose output binding connects at build time (a failure is fatal: no late
/// binding), sends one message and returns the error text, if any.
async fn connect(port: u16, ssl: &str) -> Result<StreamApp, String> {
    let env = Environment::builder()
        .properties_str(
            "application.properties",
            format!(
                "spring.rabbitmq.host=localhost\n\
                 spring.rabbitmq.port={port}\n\
                 spring.rabbitmq.connection-timeout=10s\n\
                 spring.rabbitmq.ssl.enabled=true\n\
                 {ssl}\n\
                 spring.cloud.stream.binding-retry-interval=0\n\
                 spring.cloud.stream.output-bindings=out\n\
                 spring.cloud.stream.bindings.out.destination=tls-out\n"
            ),
        )
        .build()
        .map_err(|e| e.to_string())?;
    let app = StreamApp::builder()
        .environment(env)
        .binder(RabbitBinderFactory::new())
        .build()
        .await
        .map_err(|e| e.to_string())?;
    app.bridge()
        .send("out", "over TLS".to_owned())
        .await
        .map_err(|e| e.to_string())?;
    Ok(app)
}

#[tokio::test]
#[ignore = "needs rabbitmq-server, openssl and keytool installed; run with cargo xtask itest"]
async fn tls_trusts_the_configured_ca_and_presents_the_client_certificate() {
    let _ = IGNORE;
    let dir = std::env::temp_dir().join(format!("streamrs-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    certificates(&dir);
    let node = Node::start(&dir);
    let d = dir.display();

    // Trusted CA (PEM) and a client certificate (PEM bundle): connects; the broker saw the cert.
    let app = connect(
        node.tls_port,
        &format!(
            "spring.rabbitmq.ssl.trust-store={d}/ca.pem\n\
             spring.rabbitmq.ssl.trust-store-type=PEM\n\
             spring.rabbitmq.ssl.key-store={d}/client-bundle.pem\n\
             spring.rabbitmq.ssl.key-store-type=PEM"
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("trusted CA: {e}"));
    let seen = node.ctl(&["list_connections", "ssl", "peer_cert_subject"]);
    assert!(
        seen.contains("true") && seen.contains("CN=stream-rs client"),
        "the broker holds TLS connections with the client certificate: {seen}"
    );
    app.shutdown().await.expect("shutdown");

    // Spring Boot's defaults: a PKCS12 trust store given with the default type JKS (recognised
    // by its content), a PKCS12 key store.
    let app = connect(
        node.tls_port,
        &format!(
            "spring.rabbitmq.ssl.trust-store=file:{d}/trust.p12\n\
             spring.rabbitmq.ssl.trust-store-password=secret\n\
             spring.rabbitmq.ssl.key-store={d}/client.p12\n\
             spring.rabbitmq.ssl.key-store-password=secret"
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("PKCS12 stores: {e}"));
    app.shutdown().await.expect("shutdown");

    // A JKS trust store (Boot's default type) cannot be read: the error says how to convert it.
    let err = connect(
        node.tls_port,
        &format!("spring.rabbitmq.ssl.trust-store={d}/trust.jks"),
    )
    .await
    .map(|_| ())
    .expect_err("JKS");
    assert!(
        err.contains("spring.rabbitmq.ssl.trust-store: JKS") && err.contains("keytool"),
        "{err}"
    );

    // An unknown CA: refused, and the error says why and which key to set.
    let err = connect(
        node.tls_port,
        &format!(
            "spring.rabbitmq.ssl.trust-store={d}/other.pem\n\
             spring.rabbitmq.ssl.key-store={d}/client-bundle.pem\n\
             spring.rabbitmq.ssl.key-store-type=PEM"
        ),
    )
    .await
    .map(|_| ())
    .expect_err("an unknown CA is refused");
    assert!(
        err.contains("certificate")
            && err.contains("not signed by a CA of spring.rabbitmq.ssl.trust-store"),
        "{err}"
    );

    // The trusted CA without a client certificate: the broker (fail_if_no_peer_cert) refuses.
    let err = connect(
        node.tls_port,
        &format!("spring.rabbitmq.ssl.trust-store={d}/ca.pem"),
    )
    .await
    .map(|_| ())
    .expect_err("no client certificate");
    assert!(err.contains("localhost"), "{err}");
    drop(node);
}
