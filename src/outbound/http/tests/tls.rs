//! Tests of one webhook POST over TLS, against a receiver presenting a certificate from a
//! certificate authority made for these tests.

use super::*;

#[tokio::test]
async fn https_to_a_plain_http_receiver_is_a_tls_error() {
    // The receiver reads the ClientHello as far as it can and answers in plain HTTP.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut hello = [0u8; 512];
        let _ = stream.read(&mut hello).await;
        let _ = stream
            .write_all(response("400 Bad Request", "", "plain http").as_bytes())
            .await;
        let _ = stream.shutdown().await;
    });
    let url = EndpointUrl::parse(&format!("https://{address}/"), true).unwrap();
    assert!(url.is_https());
    let outcome = post(&local_poster(), &url).await;
    let Outcome::Error { reason } = &outcome else {
        panic!("expected an error, got {outcome:?}");
    };
    assert!(
        reason.starts_with("TLS handshake with 127.0.0.1 failed"),
        "{reason}"
    );
}

/// A certificate authority made for these tests, and a certificate it issued for
/// 127.0.0.1 with that certificate's key, valid from 2020 to 2120. They protect nothing.
const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBfTCCASOgAwIBAgIBATAKBggqhkjOPQQDAjAlMSMwIQYDVQQDDBpxdW9ydW0t
aHViIHdlYmhvb2sgdGVzdCBDQTAgFw0yMDAxMDEwMDAwMDBaGA8yMTIwMDEwMTAw
MDAwMFowJTEjMCEGA1UEAwwacXVvcnVtLWh1YiB3ZWJob29rIHRlc3QgQ0EwWTAT
BgcqhkjOPQIBBggqhkjOPQMBBwNCAASqjhHYBp95UPGnVbj0/K1WBKb+YztDIV5z
eTa/V5n8oIR3JNthLSzbPbxIzUs4N/4QRNk1iQ8sXNtzdi4zri/Vo0IwQDAPBgNV
HRMBAf8EBTADAQH/MA4GA1UdDwEB/wQEAwICBDAdBgNVHQ4EFgQU/D0iQSQxA5mR
Yby5vXEyDq0xJP8wCgYIKoZIzj0EAwIDSAAwRQIhAMOKgqTyFOsX4kwOkAeHPuP6
ygH/IhY0RO24GPrxBv2UAiAmHPjRrWVvwzT8swoAaYwsAJwoOKj+XRjlyVRk3TjO
Rw==
-----END CERTIFICATE-----
";
const TEST_LEAF: &str = "-----BEGIN CERTIFICATE-----
MIIBrjCCAVWgAwIBAgIBAjAKBggqhkjOPQQDAjAlMSMwIQYDVQQDDBpxdW9ydW0t
aHViIHdlYmhvb2sgdGVzdCBDQTAgFw0yMDAxMDEwMDAwMDBaGA8yMTIwMDEwMTAw
MDAwMFowFDESMBAGA1UEAwwJMTI3LjAuMC4xMFkwEwYHKoZIzj0CAQYIKoZIzj0D
AQcDQgAEf58r/N+Futh6kvknscyC/3y5QScekHLR0ZU5lSC3j7Yz2iV/teGnrjdK
wvWljPYqf9eLWEnpbjvcWX8AS3pOkKOBhDCBgTAJBgNVHRMEAjAAMA8GA1UdEQQI
MAaHBH8AAAEwEwYDVR0lBAwwCgYIKwYBBQUHAwEwDgYDVR0PAQH/BAQDAgeAMB8G
A1UdIwQYMBaAFPw9IkEkMQOZkWG8ub1xMg6tMST/MB0GA1UdDgQWBBTd241ShDrX
ojDjKxQDTmqCL7LHVzAKBggqhkjOPQQDAgNHADBEAiAc+juAH3InB+gUobvpdksX
uMxrtRJgPwB0UgUF3RfPJAIgBqkXQbzElnkmA7A1JuE/ungmi3mHe1eR0xHwgaDL
/+Q=
-----END CERTIFICATE-----
";
const TEST_LEAF_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgeOc87ynYufK9Pt/R
dfwWMkHL4EcBBACwEiTDpdCrJqGhRANCAAR/nyv834W62HqS+SexzIL/fLlBJx6Q
ctHRlTmVILePtjPaJX+14aeuN0rC9aWM9ip/14tYSeluO9xZfwBLek6Q
-----END PRIVATE KEY-----
";

/// An https receiver on 127.0.0.1 presenting [`TEST_LEAF`]: it hands each request it
/// reads to the test and answers 200.
async fn tls_receiver() -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certificate = CertificateDer::from_pem_slice(TEST_LEAF.as_bytes()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(TEST_LEAF_KEY.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(tls_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certificate], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (requests_in, requests) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let requests_in = requests_in.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake here.
                let Ok(mut stream) = acceptor.accept(stream).await else {
                    return;
                };
                if let Some(received) = read_request(&mut stream).await {
                    let _ = requests_in.send(received);
                    let answer = response("200 OK", "", "ok");
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                }
            });
        }
    });
    (address, requests)
}

#[tokio::test]
async fn https_is_delivered_to_a_receiver_whose_certificate_is_trusted() {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    let (address, mut requests) = tls_receiver().await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(TEST_CA.as_bytes()).unwrap())
        .unwrap();
    let poster = Poster::trusting(
        PosterSettings {
            timeout: TEST_TIMEOUT,
            allow_private: true,
            user_agent: "quorum-hub-test/1".to_owned(),
        },
        roots,
    );
    let url = EndpointUrl::parse(&format!("https://{address}/hooks"), true).unwrap();
    let outcome = post(&poster, &url).await;
    assert_eq!(outcome, Outcome::Delivered { status: 200 });
    let received = requests.try_recv().expect("the receiver read a request");
    assert_eq!(received.request_line, "POST /hooks HTTP/1.1");
    assert_eq!(received.header("host"), vec![address.to_string()]);
    assert_eq!(received.header("webhook-id"), vec!["msg_1"]);
    assert_eq!(received.body, BODY);
}

#[tokio::test]
async fn https_refuses_a_certificate_no_public_authority_issued() {
    let (address, mut requests) = tls_receiver().await;
    let url = EndpointUrl::parse(&format!("https://{address}/hooks"), true).unwrap();
    let outcome = post(&local_poster(), &url).await;
    let Outcome::Error { reason } = &outcome else {
        panic!("expected an error, got {outcome:?}");
    };
    assert!(
        reason.starts_with("TLS handshake with 127.0.0.1 failed: invalid peer certificate"),
        "{reason}"
    );
    assert!(requests.try_recv().is_err(), "no request was sent");
}
