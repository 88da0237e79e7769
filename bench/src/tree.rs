//! A realistic WSO2 API gateway deployment tree (seeded, reproducible), and writing it,
//! reading it back and waiting until it is complete on replicas.
//!
//! For N APIs: `repository/deployment/server/synapse-configs/default/` with N API
//! definitions (2–20 KiB of Synapse XML each), N/2 sequences and N/2 endpoints
//! (0.5–4 KiB), N/10 local entries (0.2–2 KiB) and N/20 proxy services (1–6 KiB), plus
//! `webapps/` with 3 .war files of 1–8 MiB and `carbonapps/` with 3 .car files of
//! 5–20 MiB (random bytes: archives do not compress).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use std::sync::atomic::Ordering;

use crate::replication::{track_arrivals, WriteProgress};
use crate::util::{check_interrupted, has_content, Rng};

/// One file of the tree.
pub struct TreeFile {
    /// Path relative to the tree's root.
    pub rel: String,
    pub data: Vec<u8>,
}

/// A generated deployment tree.
pub struct Tree {
    /// Directories, parents first.
    pub dirs: Vec<String>,
    /// Small XML files first, then the archives (the order a deployment writes them).
    pub files: Vec<TreeFile>,
}

const SERVER: &str = "repository/deployment/server";
const SYNAPSE: &str = "repository/deployment/server/synapse-configs/default";
const NS: &str = "http://ws.apache.org/ns/synapse";
const WORDS: &[&str] = &[
    "Pizza",
    "Order",
    "Payment",
    "Customer",
    "Inventory",
    "Shipping",
    "Invoice",
    "Account",
    "Loyalty",
    "Catalog",
    "Pricing",
    "Claims",
    "Policy",
    "Booking",
    "Ticket",
    "Weather",
    "Notify",
    "Profile",
    "Ledger",
    "Quote",
    "Refund",
    "Stock",
    "Tracking",
    "Audit",
];
/// The handler chain API Manager appends to every API.
const HANDLERS: &str = "   <handlers>\n      <handler class=\"org.wso2.carbon.apimgt.gateway.handlers.common.APIMgtLatencyStatsHandler\"/>\n      <handler class=\"org.wso2.carbon.apimgt.gateway.handlers.security.CORSRequestHandler\">\n         <property name=\"apiImplementationType\" value=\"ENDPOINT\"/>\n         <property name=\"allowHeaders\" value=\"authorization,Access-Control-Allow-Origin,Content-Type,SOAPAction,apikey,Internal-Key\"/>\n         <property name=\"allowedOrigins\" value=\"*\"/>\n         <property name=\"AuthorizationHeader\" value=\"Authorization\"/>\n         <property name=\"allowedMethods\" value=\"GET,PUT,POST,DELETE,PATCH,OPTIONS\"/>\n         <property name=\"allowCredentials\" value=\"false\"/>\n      </handler>\n      <handler class=\"org.wso2.carbon.apimgt.gateway.handlers.security.APIAuthenticationHandler\">\n         <property name=\"RemoveOAuthHeadersFromOutMessage\" value=\"true\"/>\n         <property name=\"APISecurity\" value=\"oauth2,oauth_basic_auth_api_key_mandatory\"/>\n      </handler>\n      <handler class=\"org.wso2.carbon.apimgt.gateway.handlers.throttling.ThrottleHandler\"/>\n      <handler class=\"org.wso2.carbon.apimgt.gateway.handlers.analytics.APIMgtGoogleAnalyticsTrackingHandler\">\n         <property name=\"configKey\" value=\"gov:/apimgt/statistics/ga-config.xml\"/>\n      </handler>\n      <handler class=\"org.wso2.carbon.apimgt.gateway.handlers.ext.APIManagerExtensionHandler\"/>\n   </handlers>\n</api>\n";
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "GET", "GET"];

impl Tree {
    /// The tree for `apis` APIs; the same `seed` gives the same bytes.
    pub fn generate(apis: usize, seed: u64) -> Tree {
        let mut rng = Rng::new(seed ^ apis as u64);
        let mut files = Vec::new();
        let kinds = [
            "api",
            "sequences",
            "endpoints",
            "local-entries",
            "proxy-services",
        ];
        let mut dirs: Vec<String> = vec![
            "repository".into(),
            "repository/deployment".into(),
            SERVER.into(),
            format!("{SERVER}/synapse-configs"),
            SYNAPSE.into(),
        ];
        dirs.extend(kinds.iter().map(|k| format!("{SYNAPSE}/{k}")));
        dirs.push(format!("{SERVER}/webapps"));
        dirs.push(format!("{SERVER}/carbonapps"));

        for i in 0..apis {
            let name = api_name(&mut rng, i);
            let data = api_xml(&mut rng, &name, i);
            files.push(TreeFile {
                rel: format!("{SYNAPSE}/api/admin--{name}_v1.0.{}.xml", i % 7),
                data,
            });
        }
        for i in 0..apis.div_ceil(2) {
            let name = format!("{}_{i}", rng.pick(WORDS));
            files.push(TreeFile {
                rel: format!("{SYNAPSE}/sequences/{name}--In.xml"),
                data: sequence_xml(&mut rng, &name),
            });
        }
        for i in 0..apis.div_ceil(2) {
            let name = format!("{}API_{i}_APIproductionEndpoint", rng.pick(WORDS));
            files.push(TreeFile {
                rel: format!("{SYNAPSE}/endpoints/{name}.xml"),
                data: endpoint_xml(&mut rng, &name, i),
            });
        }
        for i in 0..apis.div_ceil(10).max(5) {
            let key = format!("{}-config-{i}", rng.pick(WORDS).to_lowercase());
            files.push(TreeFile {
                rel: format!("{SYNAPSE}/local-entries/{key}.xml"),
                data: local_entry_xml(&mut rng, &key),
            });
        }
        for i in 0..apis.div_ceil(20).max(2) {
            let name = format!("{}Proxy{i}", rng.pick(WORDS));
            files.push(TreeFile {
                rel: format!("{SYNAPSE}/proxy-services/{name}.xml"),
                data: proxy_xml(&mut rng, &name, i),
            });
        }
        for name in [
            "am#sample#pizzashack#v1.war",
            "api#am#devportal.war",
            "oauth2.war",
        ] {
            let size = rng.range(1 << 20, 8 << 20);
            files.push(TreeFile {
                rel: format!("{SERVER}/webapps/{name}"),
                data: rng.bytes(size),
            });
        }
        for name in [
            "OrderServices_1.0.0.car",
            "PaymentGateway_2.3.1.car",
            "CommonLibs_1.4.0.car",
        ] {
            let size = rng.range(5 << 20, 20 << 20);
            files.push(TreeFile {
                rel: format!("{SERVER}/carbonapps/{name}"),
                data: rng.bytes(size),
            });
        }
        Tree { dirs, files }
    }

    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.data.len() as u64).sum()
    }
}

fn api_name(rng: &mut Rng, i: usize) -> String {
    format!("{}{}API{i}", rng.pick(WORDS), rng.pick(WORDS))
}

fn api_xml(rng: &mut Rng, name: &str, i: usize) -> Vec<u8> {
    let target = rng.range(2 << 10, 20 << 10);
    let ctx = name.to_lowercase();
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<api xmlns=\"{NS}\" name=\"admin--{name}\" context=\"/{ctx}/1.0.{}\" version=\"1.0.{}\" version-type=\"context\">\n",
        i % 7,
        i % 7
    );
    let handlers = HANDLERS;
    let mut r = 0;
    loop {
        let res = resource_xml(rng, name, r);
        if r > 0 && s.len() + res.len() + handlers.len() > target {
            break;
        }
        s.push_str(&res);
        r += 1;
    }
    s.push_str(handlers);
    s.into_bytes()
}

fn resource_xml(rng: &mut Rng, name: &str, r: usize) -> String {
    let method = rng.pick(METHODS);
    let path = format!("/{}/{{id}}/{}", rng.pick(WORDS).to_lowercase(), r);
    let throttle = rng.pick(&["Unlimited", "Gold", "Silver", "Bronze"]);
    let mut s = String::new();
    let _ = write!(
        s,
        "   <resource methods=\"{method} OPTIONS\" url-mapping=\"{path}\" faultSequence=\"fault\">\n      <inSequence>\n         <property name=\"api.ut.backendRequestTime\" expression=\"get-property('SYSTEM_TIME')\"/>\n         <property name=\"THROTTLING_TIER\" value=\"{throttle}\" scope=\"default\"/>\n         <filter source=\"$ctx:AM_KEY_TYPE\" regex=\"PRODUCTION\">\n            <then>\n               <property name=\"ENDPOINT_ADDRESS\" expression=\"get-property('To')\"/>\n               <send>\n                  <endpoint key=\"{name}_APIproductionEndpoint_{r}\"/>\n               </send>\n            </then>\n            <else>\n               <sequence key=\"_sandbox_key_error_\"/>\n            </else>\n         </filter>\n      </inSequence>\n      <outSequence>\n         <class name=\"org.wso2.carbon.apimgt.usage.publisher.APIMgtResponseHandler\"/>\n         <send/>\n      </outSequence>\n   </resource>\n"
    );
    s
}

fn sequence_xml(rng: &mut Rng, name: &str) -> Vec<u8> {
    let target = rng.range(512, 4 << 10);
    let mut s = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<sequence xmlns=\"{NS}\" name=\"{name}\" trace=\"disable\">\n   <log level=\"custom\">\n      <property name=\"SEQUENCE\" value=\"{name}\"/>\n   </log>\n");
    let end = "</sequence>\n";
    let mut k = 0;
    while s.len() + end.len() + 120 < target {
        let _ = writeln!(
            s,
            "   <property name=\"X-{}-{k}\" expression=\"get-property('transport', 'X-{}')\" scope=\"transport\" type=\"STRING\"/>",
            rng.pick(WORDS),
            rng.pick(WORDS)
        );
        k += 1;
    }
    s.push_str(end);
    s.into_bytes()
}

fn endpoint_xml(rng: &mut Rng, name: &str, i: usize) -> Vec<u8> {
    let target = rng.range(512, 4 << 10);
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<endpoint xmlns=\"{NS}\" name=\"{name}\">\n   <http uri-template=\"https://backend-{}.internal.example:8243/{}/v1\">\n      <timeout>\n         <duration>30000</duration>\n         <responseAction>fault</responseAction>\n      </timeout>\n      <suspendOnFailure>\n         <errorCodes>-1</errorCodes>\n         <initialDuration>0</initialDuration>\n         <progressionFactor>1.0</progressionFactor>\n         <maximumDuration>0</maximumDuration>\n      </suspendOnFailure>\n      <markForSuspension>\n         <errorCodes>-1</errorCodes>\n      </markForSuspension>\n   </http>\n",
        i % 97,
        rng.pick(WORDS).to_lowercase()
    );
    let end = "</endpoint>\n";
    let mut k = 0;
    while s.len() + end.len() + 90 < target {
        let _ = writeln!(
            s,
            "   <property name=\"{}.retry.{k}\" value=\"{}\" scope=\"axis2\"/>",
            rng.pick(WORDS).to_lowercase(),
            rng.range(1, 100_000)
        );
        k += 1;
    }
    s.push_str(end);
    s.into_bytes()
}

fn local_entry_xml(rng: &mut Rng, key: &str) -> Vec<u8> {
    let target = rng.range(200, 2 << 10);
    let mut s = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<localEntry xmlns=\"{NS}\" key=\"{key}\"><![CDATA[{{");
    let end = "\"end\": true}]]></localEntry>\n";
    let mut k = 0;
    while s.len() + end.len() + 40 < target {
        let _ = write!(
            s,
            "\"{}{k}\": \"{}\", ",
            rng.pick(WORDS).to_lowercase(),
            rng.next_u64()
        );
        k += 1;
    }
    s.push_str(end);
    s.into_bytes()
}

fn proxy_xml(rng: &mut Rng, name: &str, i: usize) -> Vec<u8> {
    let target = rng.range(1 << 10, 6 << 10);
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<proxy xmlns=\"{NS}\" name=\"{name}\" transports=\"https http\" startOnLoad=\"true\" trace=\"disable\">\n   <target>\n      <inSequence>\n         <log level=\"full\"/>\n"
    );
    let end = format!(
        "      </inSequence>\n      <outSequence>\n         <send/>\n      </outSequence>\n      <endpoint>\n         <address uri=\"https://legacy-{i}.internal.example:9443/services/{name}\"/>\n      </endpoint>\n   </target>\n   <publishWSDL uri=\"file:repository/samples/resources/proxy/{name}.wsdl\"/>\n</proxy>\n"
    );
    let mut k = 0;
    while s.len() + end.len() + 110 < target {
        let _ = writeln!(
            s,
            "         <property name=\"{}Header{k}\" value=\"{}\" scope=\"transport\"/>",
            rng.pick(WORDS),
            rng.next_u64()
        );
        k += 1;
    }
    s.push_str(&end);
    s.into_bytes()
}

/// Writes `tree` below `root` (directories first, then each file: create, write, close),
/// reporting to `progress`; returns the time taken and the instant the last close
/// returned.
fn write_files(tree: &Tree, root: &Path, progress: &WriteProgress) -> Result<(Duration, Instant)> {
    let t = Instant::now();
    for d in &tree.dirs {
        let p = root.join(d);
        fs::create_dir_all(&p).with_context(|| format!("mkdir {}", p.display()))?;
    }
    for (k, f) in tree.files.iter().enumerate() {
        let p = root.join(&f.rel);
        fs::write(&p, &f.data).with_context(|| format!("write {}", p.display()))?;
        progress.written.store(k + 1, Ordering::Release);
        if k % 1000 == 999 {
            check_interrupted()?;
        }
    }
    Ok((t.elapsed(), Instant::now()))
}

/// Writes `tree` below `root`; returns the time taken.
pub fn write(tree: &Tree, root: &Path) -> Result<Duration> {
    Ok(write_files(tree, root, &WriteProgress::default())?.0)
}

/// Writes `tree` below `root` while a poller thread records when each file is complete
/// (size and content) below every receiver root. Returns the time taken to write and
/// the seconds from the last close until the whole tree was complete everywhere (None:
/// not within `deadline`).
pub fn write_replicated(
    tree: &Tree,
    root: &Path,
    receivers: &[PathBuf],
    deadline: Duration,
) -> Result<(Duration, Option<f64>)> {
    let progress = WriteProgress::default();
    let files = &tree.files;
    let (written, complete) = std::thread::scope(|scope| {
        let poller = scope.spawn(|| {
            track_arrivals(receivers.len(), files.len(), &progress, deadline, |k, i| {
                has_content(&receivers[k].join(&files[i].rel), &files[i].data)
            })
        });
        let w = write_files(tree, root, &progress);
        progress.done.store(true, Ordering::Release);
        (w, poller.join())
    });
    let (took, last_close) = written?;
    let complete = complete.map_err(|_| anyhow::anyhow!("tree poller panicked"))?;
    check_interrupted()?;
    let converged = complete.iter().all(Option::is_some).then(|| {
        complete
            .iter()
            .flatten()
            .map(|t| t.saturating_duration_since(last_close).as_secs_f64())
            .fold(0.0, f64::max)
    });
    Ok((took, converged))
}

/// Reads every file of `tree` below `root` and compares it; the time taken.
pub fn read_back(tree: &Tree, root: &Path) -> Result<Duration> {
    let t = Instant::now();
    for f in &tree.files {
        let p = root.join(&f.rel);
        let got = fs::read(&p).with_context(|| format!("read {}", p.display()))?;
        if got != f.data {
            bail!("{}: content differs from what was written", p.display());
        }
    }
    Ok(t.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_is_reproducible_and_realistic() {
        let a = Tree::generate(100, 1);
        let b = Tree::generate(100, 1);
        assert_eq!(a.files.len(), b.files.len());
        assert!(a
            .files
            .iter()
            .zip(&b.files)
            .all(|(x, y)| x.rel == y.rel && x.data == y.data));
        let apis: Vec<&TreeFile> = a.files.iter().filter(|f| f.rel.contains("/api/")).collect();
        assert_eq!(apis.len(), 100);
        for f in &apis {
            assert!(
                (2 << 10..=21 << 10).contains(&f.data.len()),
                "{} {}",
                f.rel,
                f.data.len()
            );
            assert!(f.data.ends_with(b"</api>\n"));
        }
        let mut names: Vec<&str> = a.files.iter().map(|f| f.rel.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), a.files.len(), "file names are unique");
        assert_eq!(
            a.files.iter().filter(|f| f.rel.ends_with(".car")).count(),
            3
        );
    }

    #[test]
    fn write_read_and_replicate_on_a_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let mut t = Tree::generate(10, 2);
        t.files.retain(|f| f.data.len() < 1 << 20);
        let other = tmp.path().join("other");
        let (_, converged) = write_replicated(
            &t,
            &other,
            std::slice::from_ref(&other),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(converged.is_some());
        let plain = tmp.path().join("plain");
        write(&t, &plain).unwrap();
        read_back(&t, &plain).unwrap();
    }
}
