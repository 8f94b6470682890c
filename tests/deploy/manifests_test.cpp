// Checks of docker-compose.yml and k8s/*.yaml that need no Docker engine and no cluster: the
// variables they set exist, ports and probes match the services, and the pod is locked down.
#include "deploy/manifest_support.h"
#include "support/process.h"

#include <gtest/gtest.h>

#include <filesystem>

namespace nbu::test {
namespace {

constexpr double kDefaultShutdownGraceS = 25;  // the uploader's APP_SHUTDOWN_GRACE_S default

YAML::Node Compose() { return YAML::LoadFile(SourceDir() + "/docker-compose.yml"); }

YAML::Node UploaderContainer() {
  const YAML::Node deploy = FindKind("k8s/deployment.yaml", "Deployment");
  for (const auto& c : deploy["spec"]["template"]["spec"]["containers"]) {
    if (c["name"].as<std::string>() == "uploader") return c;
  }
  ADD_FAILURE() << "no container named uploader";
  return {};
}

std::vector<std::string> Strings(const YAML::Node& seq) {
  std::vector<std::string> out;
  for (const auto& n : seq) out.push_back(n.as<std::string>());
  return out;
}

bool Contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// Every APP_*/GEN_* name the files set, with where it was found.
std::map<std::string, std::string> NamesWithPrefix(const std::string& prefix) {
  std::map<std::string, std::string> out;
  const YAML::Node services = Compose()["services"];
  for (const auto& svc : services) {
    for (const auto& n : ComposeEnvNames(svc.second)) {
      if (n.rfind(prefix, 0) == 0) out[n] = "docker-compose.yml " + svc.first.as<std::string>();
    }
  }
  for (const auto& n : ContainerEnvNames(UploaderContainer())) {
    if (n.rfind(prefix, 0) == 0) out[n] = "k8s/deployment.yaml";
  }
  return out;
}

TEST(ManifestVarsTest, EveryAppVariableIsOneTheUploaderReads) {
  const auto known = ConfigVars("nfs-blob-uploader", "APP_");
  ASSERT_TRUE(known) << BinaryPath("nfs-blob-uploader")
                     << " --config-vars failed or printed no APP_* variable";
  const auto used = NamesWithPrefix("APP_");
  EXPECT_GE(used.size(), 10u);
  for (const auto& [name, where] : used) {
    EXPECT_TRUE(known->count(name)) << where << " sets " << name << ", which the uploader ignores";
  }
}

TEST(ManifestVarsTest, EveryGenVariableIsOneTheGeneratorReads) {
  const auto known = ConfigVars("nfs-testgen", "GEN_");
  ASSERT_TRUE(known) << "nfs-testgen --config-vars failed";
  for (const auto& [name, where] : NamesWithPrefix("GEN_")) {
    EXPECT_TRUE(known->count(name)) << where << " sets " << name << ", which nfs-testgen ignores";
  }
}

TEST(ComposeTest, ServicesPortsAndSharedVolume) {
  const YAML::Node s = Compose()["services"];
  for (const char* name : {"app", "azurite", "otel-collector", "test-nfs"}) {
    ASSERT_TRUE(s[name]) << "missing service " << name;
  }
  EXPECT_TRUE(Contains(Strings(s["app"]["ports"]), "127.0.0.1:8000:8000"));
  EXPECT_TRUE(Contains(Strings(s["azurite"]["ports"]), "127.0.0.1:10000:10000"));
  EXPECT_TRUE(Contains(Strings(s["otel-collector"]["ports"]), "127.0.0.1:4317:4317"));
  EXPECT_TRUE(Contains(Strings(s["otel-collector"]["ports"]), "127.0.0.1:4318:4318"));
  EXPECT_TRUE(Contains(Strings(s["test-nfs"]["ports"]), "127.0.0.1:8080:8080"));
  EXPECT_EQ(s["app"]["environment"]["APP_HTTP_PORT"].as<std::string>(), "8000");
  EXPECT_EQ(s["test-nfs"]["environment"]["GEN_HTTP_PORT"].as<std::string>(), "8080");
  // Generator output is the uploader's incoming directory, on the same named volume.
  EXPECT_EQ(s["app"]["environment"]["APP_NFS_INCOMING_DIR"].as<std::string>(),
            s["test-nfs"]["environment"]["GEN_OUTPUT_DIR"].as<std::string>());
  EXPECT_TRUE(Contains(Strings(s["app"]["volumes"]), "nfs:/mnt/nfs"));
  EXPECT_TRUE(Contains(Strings(s["test-nfs"]["volumes"]), "nfs:/mnt/nfs"));
  EXPECT_TRUE(Compose()["volumes"]["nfs"]);
  EXPECT_EQ(s["app"]["env_file"][0]["path"].as<std::string>(), ".env");
  EXPECT_FALSE(s["app"]["env_file"][0]["required"].as<bool>());
  // ./.env holds the storage credentials and the API token: the generator gets none of it.
  EXPECT_FALSE(s["test-nfs"]["env_file"]);
  for (const auto& entry : s["test-nfs"]["environment"]) {
    const auto key = entry.first.as<std::string>();
    EXPECT_TRUE(key.starts_with("GEN_")) << key;
  }
  for (const char* name : {"app", "test-nfs"}) {
    const auto dockerfile = s[name]["build"]["dockerfile"].as<std::string>();
    EXPECT_TRUE(std::filesystem::exists(SourceDir() + "/" + dockerfile)) << dockerfile;
  }
}

TEST(ComposeTest, AzuriteAndConnectionString) {
  const YAML::Node s = Compose()["services"];
  // The Azurite the tests run (package.json), not whatever "latest" is, and it sends no usage
  // data off the machine (Azurite's telemetry is on unless disabled).
  const auto pinned =
      YAML::LoadFile(SourceDir() + "/package.json")["devDependencies"]["azurite"].as<std::string>();
  EXPECT_EQ(s["azurite"]["image"].as<std::string>(),
            "mcr.microsoft.com/azure-storage/azurite:" + pinned);
  const auto cmd = Strings(s["azurite"]["command"]);
  ASSERT_FALSE(cmd.empty());
  EXPECT_EQ(cmd[0], "azurite-blob");
  EXPECT_TRUE(Contains(cmd, "--skipApiVersionCheck"));
  EXPECT_TRUE(Contains(cmd, "--disableTelemetry"));
  const auto host = std::find(cmd.begin(), cmd.end(), "--blobHost");
  ASSERT_NE(host, cmd.end());
  EXPECT_EQ(*(host + 1), "0.0.0.0");
  const auto conn = s["app"]["environment"]["APP_AZURE_CONNECTION_STRING"].as<std::string>();
  EXPECT_NE(conn.find("BlobEndpoint=http://azurite:10000/devstoreaccount1"), std::string::npos);
}

TEST(ComposeTest, StopGraceExceedsTheUploadersShutdownGrace) {
  const YAML::Node app = Compose()["services"]["app"];
  const double grace = app["environment"]["APP_SHUTDOWN_GRACE_S"]
                           ? app["environment"]["APP_SHUTDOWN_GRACE_S"].as<double>()
                           : kDefaultShutdownGraceS;
  EXPECT_GT(ParseComposeDuration(app["stop_grace_period"].as<std::string>()), grace);
}

TEST(ComposeTest, CollectorReceivesOtlpAndPrintsIt) {
  const YAML::Node c = YAML::LoadFile(SourceDir() + "/deploy/otel-collector.yaml");
  const YAML::Node otlp = c["receivers"]["otlp"]["protocols"];
  EXPECT_EQ(otlp["grpc"]["endpoint"].as<std::string>(), "0.0.0.0:4317");
  EXPECT_EQ(otlp["http"]["endpoint"].as<std::string>(), "0.0.0.0:4318");
  ASSERT_TRUE(c["exporters"]["debug"]);
  for (const char* p : {"traces", "metrics"}) {
    const YAML::Node pipe = c["service"]["pipelines"][p];
    EXPECT_TRUE(Contains(Strings(pipe["receivers"]), "otlp")) << p;
    EXPECT_TRUE(Contains(Strings(pipe["exporters"]), "debug")) << p;
  }
  const auto endpoint = Compose()["services"]["app"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"];
  EXPECT_EQ(endpoint.as<std::string>(), "http://otel-collector:4318");
}

TEST(KubernetesTest, ADisruptionBudgetKeepsOnePodUp) {
  const YAML::Node pdb = FindKind("k8s/pdb.yaml", "PodDisruptionBudget");
  EXPECT_EQ(pdb["spec"]["maxUnavailable"].as<int>(), 1);
  const YAML::Node d = FindKind("k8s/deployment.yaml", "Deployment");
  EXPECT_GE(d["spec"]["replicas"].as<int>(), 2) << "one down of one leaves none up";
  EXPECT_EQ(
      pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"].as<std::string>(),
      d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"].as<std::string>());
}

TEST(KubernetesTest, DeploymentProbesPortsAndGrace) {
  const YAML::Node d = FindKind("k8s/deployment.yaml", "Deployment");
  const YAML::Node pod = d["spec"]["template"]["spec"];
  const YAML::Node c = UploaderContainer();
  EXPECT_EQ(d["spec"]["replicas"].as<int>(), 2);
  EXPECT_EQ(c["ports"][0]["containerPort"].as<int>(), 8000);
  EXPECT_EQ(c["readinessProbe"]["httpGet"]["path"].as<std::string>(), "/readyz");
  EXPECT_EQ(c["readinessProbe"]["httpGet"]["port"].as<int>(), 8000);
  EXPECT_EQ(c["livenessProbe"]["httpGet"]["path"].as<std::string>(), "/healthz");
  EXPECT_EQ(c["livenessProbe"]["httpGet"]["port"].as<int>(), 8000);
  // Liveness waits for a start-up probe that allows for the checks before the API listens.
  EXPECT_EQ(c["startupProbe"]["httpGet"]["path"].as<std::string>(), "/healthz");
  EXPECT_GE(c["startupProbe"]["periodSeconds"].as<int>() *
                c["startupProbe"]["failureThreshold"].as<int>(),
            120);
  for (const char* probe : {"startupProbe", "readinessProbe", "livenessProbe"}) {
    EXPECT_GE(c[probe]["timeoutSeconds"].as<int>(), 3) << probe;
  }
  EXPECT_EQ(ContainerEnvValue(c, "APP_HTTP_PORT"), "8000");
  const auto grace = ContainerEnvValue(c, "APP_SHUTDOWN_GRACE_S");
  const double grace_s = grace ? std::stod(*grace) : kDefaultShutdownGraceS;
  EXPECT_GT(pod["terminationGracePeriodSeconds"].as<double>(), grace_s);
  // APP_REPLICA_ID is the pod name.
  bool replica_from_pod_name = false;
  for (const auto& e : c["env"]) {
    if (e["name"].as<std::string>() == "APP_REPLICA_ID") {
      replica_from_pod_name =
          e["valueFrom"]["fieldRef"]["fieldPath"].as<std::string>() == "metadata.name";
    }
  }
  EXPECT_TRUE(replica_from_pod_name);
  const YAML::Node secret = c["envFrom"][0]["secretRef"];
  EXPECT_EQ(secret["name"].as<std::string>(), "azure-credentials");
  EXPECT_TRUE(secret["optional"].as<bool>());
}

TEST(KubernetesTest, DeploymentResourcesAndVolumes) {
  const YAML::Node c = UploaderContainer();
  const YAML::Node r = c["resources"];
  EXPECT_EQ(r["requests"]["cpu"].as<std::string>(), "250m");
  EXPECT_EQ(r["requests"]["memory"].as<std::string>(), "256Mi");
  EXPECT_EQ(r["limits"]["cpu"].as<std::string>(), "2");
  EXPECT_EQ(r["limits"]["memory"].as<std::string>(), "1Gi");
  EXPECT_EQ(r["requests"]["ephemeral-storage"].as<std::string>(), "6Gi");
  EXPECT_EQ(r["limits"]["ephemeral-storage"].as<std::string>(), "6Gi");
  std::map<std::string, std::string> mounts;  // volume name -> path
  for (const auto& m : c["volumeMounts"]) {
    mounts[m["name"].as<std::string>()] = m["mountPath"].as<std::string>();
  }
  const YAML::Node pod = FindKind("k8s/deployment.yaml", "Deployment")["spec"]["template"]["spec"];
  const std::string claim =
      FindKind("k8s/pvc-nfs.yaml", "PersistentVolumeClaim")["metadata"]["name"].as<std::string>();
  bool staging = false, nfs = false;
  for (const auto& v : pod["volumes"]) {
    const auto path = mounts[v["name"].as<std::string>()];
    if (path == "/mnt/staging") {
      staging = v["emptyDir"]["sizeLimit"].as<std::string>() == "4Gi";
    } else if (path == "/mnt/nfs") {
      nfs = v["persistentVolumeClaim"]["claimName"].as<std::string>() == claim;
    }
  }
  EXPECT_TRUE(staging) << "/mnt/staging must be an emptyDir with sizeLimit 4Gi";
  EXPECT_TRUE(nfs) << "/mnt/nfs must be the NFS claim " << claim;
}

TEST(KubernetesTest, PodIsLockedDown) {
  const YAML::Node pod = FindKind("k8s/deployment.yaml", "Deployment")["spec"]["template"]["spec"];
  EXPECT_TRUE(pod["securityContext"]["runAsNonRoot"].as<bool>());
  EXPECT_NE(pod["securityContext"]["runAsUser"].as<int>(), 0);
  const YAML::Node sc = UploaderContainer()["securityContext"];
  EXPECT_TRUE(sc["readOnlyRootFilesystem"].as<bool>());
  EXPECT_FALSE(sc["allowPrivilegeEscalation"].as<bool>());
  EXPECT_EQ(Strings(sc["capabilities"]["drop"]), std::vector<std::string>{"ALL"});
  EXPECT_FALSE(sc["capabilities"]["add"]);
  const auto sa = FindKind("k8s/serviceaccount.yaml", "ServiceAccount");
  EXPECT_EQ(pod["serviceAccountName"].as<std::string>(), sa["metadata"]["name"].as<std::string>());
  // The namespace's Services put no variables in the environment (one named app-... would set
  // APP_... ones), and a node never keeps running an older build of a moving tag.
  EXPECT_FALSE(pod["enableServiceLinks"].as<bool>(true));
  // The tag is what follows the last ':' of the last path segment ("registry:5000/name" has
  // none); a digest (@sha256:...) pins the image too.
  const auto image = UploaderContainer()["image"].as<std::string>();
  const auto last = image.substr(image.rfind('/') + 1);
  const bool pinned =
      last.find('@') != std::string::npos ||
      (last.find(':') != std::string::npos && last.substr(last.rfind(':') + 1) != "latest");
  EXPECT_TRUE(pinned) << image;
}

TEST(KubernetesTest, ServiceSelectsThePodsOnPort8000) {
  const YAML::Node svc = FindKind("k8s/service.yaml", "Service");
  EXPECT_EQ(svc["spec"]["ports"][0]["port"].as<int>(), 8000);
  EXPECT_EQ(svc["spec"]["ports"][0]["targetPort"].as<int>(), 8000);
  const YAML::Node labels =
      FindKind("k8s/deployment.yaml", "Deployment")["spec"]["template"]["metadata"]["labels"];
  for (const auto& kv : svc["spec"]["selector"]) {
    EXPECT_EQ(labels[kv.first.as<std::string>()].as<std::string>(), kv.second.as<std::string>());
  }
}

// The optional NetworkPolicy selects the uploader's pods, restricts ingress only (egress reaches
// storage and Entra ID), and admits named sources to port 8000, nobody else and no other port.
TEST(KubernetesTest, TheNetworkPolicyAdmitsOnlyNamedClientsToThePort) {
  const YAML::Node np = FindKind("k8s/optional/networkpolicy.yaml", "NetworkPolicy");
  const YAML::Node labels =
      FindKind("k8s/deployment.yaml", "Deployment")["spec"]["template"]["metadata"]["labels"];
  const YAML::Node selector = np["spec"]["podSelector"]["matchLabels"];
  ASSERT_TRUE(selector.IsMap());
  ASSERT_GT(selector.size(), 0u) << "an empty selector would take every pod of the namespace";
  for (const auto& kv : selector) {
    EXPECT_EQ(labels[kv.first.as<std::string>()].as<std::string>(), kv.second.as<std::string>());
  }
  EXPECT_EQ(Strings(np["spec"]["policyTypes"]), std::vector<std::string>{"Ingress"});
  ASSERT_TRUE(np["spec"]["ingress"].IsSequence());
  ASSERT_GT(np["spec"]["ingress"].size(), 0u) << "no rule: the API unreachable, scrapes too";
  for (const auto& rule : np["spec"]["ingress"]) {
    ASSERT_TRUE(rule["from"].IsDefined() && rule["from"].IsSequence())
        << "a rule without from admits everyone";
    for (const auto& peer : rule["from"]) {
      EXPECT_FALSE(peer["ipBlock"]) << "admit pods, not addresses";
      for (const char* key : {"podSelector", "namespaceSelector"}) {
        if (peer[key]) {
          EXPECT_GT(peer[key]["matchLabels"].size(), 0u) << key << " {} admits every one";
        }
      }
    }
    ASSERT_TRUE(rule["ports"].IsDefined() && rule["ports"].IsSequence())
        << "a rule without ports admits every port";
    for (const auto& port : rule["ports"]) EXPECT_EQ(port["port"].as<int>(), 8000);
  }
}

TEST(KubernetesTest, NfsVolumeIsSharedAndMountedForPolling) {
  const YAML::Node pv = FindKind("k8s/pv-nfs.yaml", "PersistentVolume");
  const YAML::Node pvc = FindKind("k8s/pvc-nfs.yaml", "PersistentVolumeClaim");
  EXPECT_EQ(Strings(pv["spec"]["accessModes"]), std::vector<std::string>{"ReadWriteMany"});
  EXPECT_EQ(Strings(pvc["spec"]["accessModes"]), std::vector<std::string>{"ReadWriteMany"});
  EXPECT_EQ(pvc["spec"]["volumeName"].as<std::string>(), pv["metadata"]["name"].as<std::string>());
  EXPECT_EQ(pvc["spec"]["storageClassName"].as<std::string>(),
            pv["spec"]["storageClassName"].as<std::string>());
  const auto opts = Strings(pv["spec"]["mountOptions"]);
  EXPECT_TRUE(Contains(opts, "hard"));
  EXPECT_FALSE(Contains(opts, "soft"));
  EXPECT_TRUE(Contains(opts, "nfsvers=4.1"));
  const bool bounded_cache = std::any_of(opts.begin(), opts.end(), [](const std::string& o) {
    return o.rfind("actimeo=", 0) == 0 || o == "lookupcache=positive" || o == "noac";
  });
  EXPECT_TRUE(bounded_cache) << "attribute or lookup caching must be bounded";
  EXPECT_TRUE(pv["spec"]["nfs"]["server"]);
  EXPECT_TRUE(pv["spec"]["nfs"]["path"]);
  // The uploader requires the type an NFS 4.x mount shows in mountinfo, so that a pod started
  // with another volume at /mnt/nfs stops rather than scanning it.
  const auto required = ContainerEnvValue(UploaderContainer(), "APP_NFS_REQUIRE_FS_TYPE");
  ASSERT_TRUE(required.has_value());
  EXPECT_NE(("," + *required + ",").find(",nfs4,"), std::string::npos) << *required;
}

}  // namespace
}  // namespace nbu::test
