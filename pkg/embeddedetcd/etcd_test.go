package embeddedetcd

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		config  Config
		wantErr string
	}{
		{name: "defaults", config: Config{DataDir: "d"}},
		{name: "no data dir", config: Config{}, wantErr: "data dir must be set"},
		{name: "public client URL", config: Config{DataDir: "d", ListenClientURL: "http://0.0.0.0:2379"}, wantErr: "client URL: \"http://0.0.0.0:2379\": host must be a loopback address"},
		{name: "tls peer URL", config: Config{DataDir: "d", ListenPeerURL: "https://127.0.0.1:2380"}, wantErr: "peer URL: \"https://127.0.0.1:2380\": scheme must be http"},
		{name: "no port", config: Config{DataDir: "d", ListenClientURL: "http://localhost"}, wantErr: "port must be set"},
		{name: "negative quota", config: Config{DataDir: "d", QuotaBackendBytes: -1}, wantErr: "must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.config.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestEmbedConfigCarriesLargeClusterDefaults(t *testing.T) {
	cfg := Config{DataDir: "d"}.WithDefaults().embedConfig()
	if cfg.BackendFreelistType != "map" {
		t.Errorf("freelist = %q, want map", cfg.BackendFreelistType)
	}
	if cfg.QuotaBackendBytes != 8<<30 {
		t.Errorf("quota = %d, want 8 GiB", cfg.QuotaBackendBytes)
	}
}

func freeURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprintf("http://%s", l.Addr())
}

func TestStartServesAndCloses(t *testing.T) {
	s, err := Start(context.Background(), Config{DataDir: t.TempDir(), ListenClientURL: freeURL(t), ListenPeerURL: freeURL(t)})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(s.ClientURL() + "/health")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"health":"true"`) {
		t.Errorf("/health = %s", body)
	}
	s.Close()
	if _, err := http.Get(s.ClientURL() + "/health"); err == nil {
		t.Error("etcd still serves after Close")
	}
}

func TestStartRejectsInvalidConfig(t *testing.T) {
	if _, err := Start(context.Background(), Config{}); err == nil {
		t.Fatal("Start accepted a config without data dir")
	}
}
