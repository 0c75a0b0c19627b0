package project_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vmcompose/vmcompose/internal/testenv"
	"github.com/vmcompose/vmcompose/planner"
	"github.com/vmcompose/vmcompose/project"
)

// corpus lists every compose file of the corpus with what loading it must
// give: the number of services with the default profiles and with all
// profiles ("*"), or a part of the error message. The failures are the
// corpus's deliberate negative cases, plus fixtures that only load through
// another file.
var corpus = []struct {
	file                   string
	services, allProfiles  int
	errDefault, errAllProf string
}{
	{"awesome-compose/angular/compose.yaml", 1, 1, "", ""},
	{"awesome-compose/apache-php/compose.yaml", 1, 1, "", ""},
	{"awesome-compose/aspnet-mssql/compose.yaml", 2, 2, "", ""},
	{"awesome-compose/django/compose.yaml", 1, 1, "", ""},
	{"awesome-compose/elasticsearch-logstash-kibana/compose.yaml", 3, 3, "", ""},
	{"awesome-compose/fastapi/compose.yaml", 1, 1, "", ""},
	{"awesome-compose/flask-redis/compose.yaml", 2, 2, "", ""},
	{"awesome-compose/flask/compose.yaml", 1, 1, "", ""},
	{"awesome-compose/gitea-postgres/compose.yaml", 2, 2, "", ""},
	{"awesome-compose/minecraft/compose.yaml", 1, 1, "", ""},
	{"awesome-compose/nextcloud-postgres/compose.yaml", 2, 2, "", ""},
	{"awesome-compose/nextcloud-redis-mariadb/compose.yaml", 3, 3, "", ""},
	{"awesome-compose/nginx-aspnet-mysql/compose.yaml", 3, 3, "", ""},
	{"awesome-compose/nginx-flask-mongo/compose.yaml", 3, 3, "", ""},
	{"awesome-compose/nginx-flask-mysql/compose.yaml", 3, 3, "", ""},
	{"awesome-compose/nginx-golang-mysql/compose.yaml", 3, 3, "", ""},
	{"awesome-compose/nginx-golang-postgres/compose.yaml", 3, 3, "", ""},
	{"awesome-compose/nginx-golang/compose.yaml", 2, 2, "", ""},
	{"awesome-compose/nginx-nodejs-redis/compose.yaml", 4, 4, "", ""},
	{"awesome-compose/nginx-wsgi-flask/compose.yaml", 2, 2, "", ""},
	{"awesome-compose/pihole-cloudflared-DoH/compose.yaml", 2, 2, "", ""},
	{"awesome-compose/plex/compose.yaml", 1, 1, "", ""},
	{"awesome-compose/portainer/compose.yaml", 1, 1, "", ""},
	{"awesome-compose/postgresql-pgadmin/compose.yaml", 2, 2, "", ""},
	{"awesome-compose/prometheus-grafana/compose.yaml", 2, 2, "", ""},
	{"awesome-compose/react-express-mongodb/compose.yaml", 3, 3, "", ""},
	{"awesome-compose/react-express-mysql/compose.yaml", 3, 3, "", ""},
	{"awesome-compose/react-java-mysql/compose.yaml", 3, 3, "", ""},
	{"awesome-compose/react-nginx/compose.yaml", 1, 1, "", ""},
	{"awesome-compose/react-rust-postgres/compose.yaml", 3, 3, "", ""},
	{"awesome-compose/sparkjava-mysql/compose.yaml", 2, 2, "", ""},
	{"awesome-compose/sparkjava/compose.yaml", 1, 1, "", ""},
	{"awesome-compose/spring-postgres/compose.yaml", 2, 2, "", ""},
	{"awesome-compose/traefik-golang/compose.yaml", 2, 2, "", ""},
	{"awesome-compose/vuejs/compose.yaml", 1, 1, "", ""},
	{"awesome-compose/wasmedge-kafka-mysql/compose.yml", 3, 3, "", ""},
	{"awesome-compose/wasmedge-mysql-nginx/compose.yml", 3, 3, "", ""},
	{"awesome-compose/wireguard/compose.yaml", 1, 1, "", ""},
	{"awesome-compose/wordpress-mysql/compose.yaml", 2, 2, "", ""},
	{"compose-go-fixtures/cli/testdata/UNNORMALIZED PATH/compose.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/cli/testdata/env-file/compose-with-env-file.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/cli/testdata/env-file/compose-with-env-files.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/cli/testdata/label-file/compose-with-missing-label-file.yaml", 0, 0, "this-file-does-not-exist.labels not found", "this-file-does-not-exist.labels not found"},
	{"compose-go-fixtures/cli/testdata/simple/compose-name.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/cli/testdata/simple/compose-with-overrides.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/cli/testdata/simple/compose-with-paths.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/cli/testdata/simple/compose-with-variables.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/cli/testdata/simple/compose.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/loader/full-example.yml", 0, 0, "mutually exclusive `network_mode` and `networks`", "mutually exclusive `network_mode` and `networks`"},
	{"compose-go-fixtures/loader/testdata/combined/compose.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/loader/testdata/combined/dir/extended.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/loader/testdata/combined/dir/included.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/loader/testdata/compose-depends-on-cycle.yaml", 0, 0, "dependency cycle detected: service1 -> service2 -> service3 -> service1", "dependency cycle detected: service1 -> service2 -> service3 -> service1"},
	{"compose-go-fixtures/loader/testdata/compose-depends-on-profile-no-cycle.yaml", 0, 0, "dependency cycle detected: service1 -> service2 -> service3 -> service1", "dependency cycle detected: service1 -> service2 -> service3 -> service1"},
	{"compose-go-fixtures/loader/testdata/compose-depends-on-self.yaml", 0, 0, "dependency cycle detected: service1 -> service1", "dependency cycle detected: service1 -> service1"},
	{"compose-go-fixtures/loader/testdata/compose-include-cycle.yaml", 0, 0, "include cycle detected", "include cycle detected"},
	{"compose-go-fixtures/loader/testdata/compose-include.yaml", 2, 2, "", ""},
	{"compose-go-fixtures/loader/testdata/compose-test-extends-with-context-url-imported.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/loader/testdata/compose-test-extends-with-context-url.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/loader/testdata/compose-test-extends.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/loader/testdata/compose-test-with-version.yaml", 2, 2, "", ""},
	{"compose-go-fixtures/loader/testdata/empty.yaml", 0, 0, "empty compose file", "empty compose file"},
	{"compose-go-fixtures/loader/testdata/extends/base.yaml", 0, 0, "services.nil must be a mapping", "services.nil must be a mapping"},
	{"compose-go-fixtures/loader/testdata/extends/depends_on.yaml", 5, 5, "", ""},
	{"compose-go-fixtures/loader/testdata/extends/interpolated.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/loader/testdata/extends/nested.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/loader/testdata/extends/ports.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/loader/testdata/extends/reset.yaml", 2, 2, "", ""},
	{"compose-go-fixtures/loader/testdata/extends/sibling.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/loader/testdata/extends/withdir/compose.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/loader/testdata/extends/withdir/dir/base.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/loader/testdata/extends/withdir/dir/compose.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/loader/testdata/golden/merge-fragments.golden.yaml", 3, 4, "", ""},
	{"compose-go-fixtures/loader/testdata/golden/merge-fragments.yaml", 3, 4, "", ""},
	{"compose-go-fixtures/loader/testdata/golden/runtime-flags.golden.yaml", 2, 2, "", ""},
	{"compose-go-fixtures/loader/testdata/golden/runtime-flags.yaml", 2, 2, "", ""},
	{"compose-go-fixtures/loader/testdata/golden/web-stack.golden.yaml", 2, 3, "", ""},
	{"compose-go-fixtures/loader/testdata/golden/web-stack.yaml", 2, 3, "", ""},
	{"compose-go-fixtures/loader/testdata/include-diamond-base.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/loader/testdata/include-diamond-left.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/loader/testdata/include-diamond-right.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/loader/testdata/include/compose.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/loader/testdata/include/dir/compose.yaml", 0, 0, "extra.env not found", "extra.env not found"},
	{"compose-go-fixtures/loader/testdata/include/included.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/loader/testdata/include/project-directory.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/loader/testdata/remote/compose.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/loader/testdata/remote/cycle/compose-cycle.yaml", 0, 0, "remote:cycle/compose.yaml: no such file", "remote:cycle/compose.yaml: no such file"},
	{"compose-go-fixtures/loader/testdata/remote/cycle/compose.yaml", 0, 0, "remote:cycle/compose-cycle.yaml: no such file", "remote:cycle/compose-cycle.yaml: no such file"},
	{"compose-go-fixtures/loader/testdata/remote/nested/compose-nested.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/loader/testdata/remote/nested/compose.yaml", 0, 0, "remote:nested/compose-nested.yaml: no such file", "remote:nested/compose-nested.yaml: no such file"},
	{"compose-go-fixtures/loader/testdata/subdir/compose-test-extends-imported.yaml", 1, 1, "", ""},
	{"compose-go-fixtures/schema/using-variables.yaml", 0, 0, "services.foo.privileged: failed to cast to expected type: invalid boolean", "services.foo.privileged: failed to cast to expected type: invalid boolean"},
	{"compose-spec/spec-md-examples/depends_on-long-syntax.yaml", 3, 3, "", ""},
	{"compose-spec/spec-md-examples/extension-example1-x-fields.yaml", 1, 1, "", ""},
	{"compose-spec/spec-md-examples/extension-example2-x-env-anchor.yaml", 2, 2, "", ""},
	{"compose-spec/spec-md-examples/extension-example3-x-function-anchor.yaml", 0, 0, "undefined network functions", "undefined network functions"},
	{"compose-spec/spec-md-examples/extension-example4-multi-merge.yaml", 1, 1, "", ""},
	{"compose-spec/spec-md-examples/fragments-example2-anchor-alias.yaml", 2, 2, "", ""},
	{"compose-spec/spec-md-examples/fragments-example3-merge-key.yaml", 1, 1, "", ""},
	{"compose-spec/spec-md-examples/fragments-example4-merge-extend.yaml", 2, 2, "", ""},
	{"compose-spec/spec-md-examples/illustrative-example.yaml", 2, 2, "", ""},
	{"compose-spec/spec-md-examples/networks-advanced-example.yaml", 3, 3, "", ""},
	{"compose-spec/spec-md-examples/networks-aliases.yaml", 3, 3, "", ""},
	{"compose-spec/spec-md-examples/pre_start-hook.yaml", 2, 2, "", ""},
	{"compose-spec/spec-md-examples/profiles-illustrative-example.yaml", 1, 4, "", ""},
	{"compose-spec/spec-md-examples/profiles-service.yaml", 0, 0, "", "depends on undefined service \"db\""},
}

// awesomeWaves holds, for each awesome-compose example, its number of
// services and of start waves in dependency order, as the corpus README
// worked them out independently.
var awesomeWaves = map[string]struct{ services, waves int }{
	"awesome-compose/angular/compose.yaml":                       {1, 1},
	"awesome-compose/apache-php/compose.yaml":                    {1, 1},
	"awesome-compose/aspnet-mssql/compose.yaml":                  {2, 1},
	"awesome-compose/django/compose.yaml":                        {1, 1},
	"awesome-compose/elasticsearch-logstash-kibana/compose.yaml": {3, 2},
	"awesome-compose/fastapi/compose.yaml":                       {1, 1},
	"awesome-compose/flask-redis/compose.yaml":                   {2, 2},
	"awesome-compose/flask/compose.yaml":                         {1, 1},
	"awesome-compose/gitea-postgres/compose.yaml":                {2, 1},
	"awesome-compose/minecraft/compose.yaml":                     {1, 1},
	"awesome-compose/nextcloud-postgres/compose.yaml":            {2, 1},
	"awesome-compose/nextcloud-redis-mariadb/compose.yaml":       {3, 1},
	"awesome-compose/nginx-aspnet-mysql/compose.yaml":            {3, 3},
	"awesome-compose/nginx-flask-mongo/compose.yaml":             {3, 3},
	"awesome-compose/nginx-flask-mysql/compose.yaml":             {3, 3},
	"awesome-compose/nginx-golang-mysql/compose.yaml":            {3, 3},
	"awesome-compose/nginx-golang-postgres/compose.yaml":         {3, 3},
	"awesome-compose/nginx-golang/compose.yaml":                  {2, 2},
	"awesome-compose/nginx-nodejs-redis/compose.yaml":            {4, 2},
	"awesome-compose/nginx-wsgi-flask/compose.yaml":              {2, 2},
	"awesome-compose/pihole-cloudflared-DoH/compose.yaml":        {2, 2},
	"awesome-compose/plex/compose.yaml":                          {1, 1},
	"awesome-compose/portainer/compose.yaml":                     {1, 1},
	"awesome-compose/postgresql-pgadmin/compose.yaml":            {2, 1},
	"awesome-compose/prometheus-grafana/compose.yaml":            {2, 1},
	"awesome-compose/react-express-mongodb/compose.yaml":         {3, 3},
	"awesome-compose/react-express-mysql/compose.yaml":           {3, 3},
	"awesome-compose/react-java-mysql/compose.yaml":              {3, 3},
	"awesome-compose/react-nginx/compose.yaml":                   {1, 1},
	"awesome-compose/react-rust-postgres/compose.yaml":           {3, 2},
	"awesome-compose/sparkjava-mysql/compose.yaml":               {2, 1},
	"awesome-compose/sparkjava/compose.yaml":                     {1, 1},
	"awesome-compose/spring-postgres/compose.yaml":               {2, 1},
	"awesome-compose/traefik-golang/compose.yaml":                {2, 2},
	"awesome-compose/vuejs/compose.yaml":                         {1, 1},
	"awesome-compose/wasmedge-kafka-mysql/compose.yml":           {3, 1},
	"awesome-compose/wasmedge-mysql-nginx/compose.yml":           {3, 1},
	"awesome-compose/wireguard/compose.yaml":                     {1, 1},
	"awesome-compose/wordpress-mysql/compose.yaml":               {2, 1},
}

func TestLoadCorpus(t *testing.T) {
	root := testenv.Corpus(t)
	listed := map[string]bool{}
	for _, tc := range corpus {
		listed[tc.file] = true
	}
	// Every compose file of the corpus must be in the table.
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if ext := filepath.Ext(path); ext == ".yaml" || ext == ".yml" {
			rel, _ := filepath.Rel(root, path)
			if !listed[rel] {
				t.Errorf("%s is not in the corpus table", rel)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	env := []string{"GOLDEN_TAG=1.2.3", "GOLDEN_PORT=8080", "HOME=" + os.Getenv("HOME")}
	for _, tc := range corpus {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join(root, tc.file)
			for _, mode := range []struct {
				profiles []string
				services int
				err      string
			}{{nil, tc.services, tc.errDefault}, {[]string{"*"}, tc.allProfiles, tc.errAllProf}} {
				p, err := project.Load(context.Background(), project.Options{Files: []string{path}, Profiles: mode.profiles, Env: env})
				if mode.err != "" {
					if err == nil || !strings.Contains(err.Error(), mode.err) {
						t.Fatalf("profiles %v: got error %v, want one containing %q", mode.profiles, err, mode.err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("profiles %v: %v", mode.profiles, err)
				}
				if len(p.Services) != mode.services {
					t.Errorf("profiles %v: %d services, want %d", mode.profiles, len(p.Services), mode.services)
				}
				plan, err := planner.Up(planner.Desired{Project: p.Project, Problems: p.Problems}, planner.Observed{}, planner.Options{})
				if err != nil {
					t.Fatalf("profiles %v: planning: %v", mode.profiles, err)
				}
				if len(plan.Ops) < len(p.Services) {
					t.Errorf("profiles %v: %d operations for %d services", mode.profiles, len(plan.Ops), len(p.Services))
				}
				if got, want := blockedServices(plan), corpusBlocked[tc.file]; mode.profiles == nil && got != want {
					t.Errorf("%q blocked, want %q:\n%s", got, want, plan)
				}
				if want, ok := awesomeWaves[tc.file]; ok && (plan.Waves() != want.waves || len(p.Services) != want.services) {
					t.Errorf("%d services in %d waves, want %d in %d:\n%s", len(p.Services), plan.Waves(), want.services, want.waves, plan)
				}
			}
		})
	}
}

// corpusBlocked lists, for the files whose plan blocks services with the
// default profiles, those services and the first word of why: what up
// refuses before it boots anything. The corpus holds the compose files
// only, so the build contexts and Dockerfiles they name are missing.
var corpusBlocked = map[string]string{
	"awesome-compose/angular/compose.yaml":                                                    "web:build.context",
	"awesome-compose/apache-php/compose.yaml":                                                 "web:build.context",
	"awesome-compose/aspnet-mssql/compose.yaml":                                               "web:build.context",
	"awesome-compose/django/compose.yaml":                                                     "web:build.context",
	"awesome-compose/fastapi/compose.yaml":                                                    "api:build.dockerfile",
	"awesome-compose/flask-redis/compose.yaml":                                                "web:build.dockerfile",
	"awesome-compose/flask/compose.yaml":                                                      "web:build.context",
	"awesome-compose/nginx-aspnet-mysql/compose.yaml":                                         "backend:build.context proxy:build.context",
	"awesome-compose/nginx-flask-mongo/compose.yaml":                                          "backend:build.context web:depends",
	"awesome-compose/nginx-flask-mysql/compose.yaml":                                          "backend:build.context proxy:build.context",
	"awesome-compose/nginx-golang-mysql/compose.yaml":                                         "backend:build.context proxy:depends",
	"awesome-compose/nginx-golang-postgres/compose.yaml":                                      "backend:build.context proxy:depends",
	"awesome-compose/nginx-golang/compose.yaml":                                               "backend:build.context proxy:depends",
	"awesome-compose/nginx-nodejs-redis/compose.yaml":                                         "nginx:build.context web1:build.context web2:build.context",
	"awesome-compose/nginx-wsgi-flask/compose.yaml":                                           "flask-app:build.context nginx-proxy:build.context",
	"awesome-compose/react-express-mongodb/compose.yaml":                                      "backend:build.context frontend:build.context",
	"awesome-compose/react-express-mysql/compose.yaml":                                        "backend:build.context frontend:build.context",
	"awesome-compose/react-java-mysql/compose.yaml":                                           "backend:build.context frontend:build.context",
	"awesome-compose/react-nginx/compose.yaml":                                                "frontend:build.dockerfile",
	"awesome-compose/react-rust-postgres/compose.yaml":                                        "backend:build.context frontend:build.context",
	"awesome-compose/sparkjava-mysql/compose.yaml":                                            "backend:build.context",
	"awesome-compose/sparkjava/compose.yaml":                                                  "sparkjava:build.context",
	"awesome-compose/spring-postgres/compose.yaml":                                            "backend:build.context",
	"awesome-compose/traefik-golang/compose.yaml":                                             "backend:build.context frontend:depends",
	"awesome-compose/vuejs/compose.yaml":                                                      "web:build.context",
	"awesome-compose/wasmedge-kafka-mysql/compose.yml":                                        "etl:platform",
	"awesome-compose/wasmedge-mysql-nginx/compose.yml":                                        "backend:platform",
	"compose-go-fixtures/cli/testdata/simple/compose-with-paths.yaml":                         "test:volumes",
	"compose-go-fixtures/loader/testdata/combined/compose.yaml":                               "service:build.dockerfile",
	"compose-go-fixtures/loader/testdata/combined/dir/extended.yaml":                          "service:build.dockerfile",
	"compose-go-fixtures/loader/testdata/combined/dir/included.yaml":                          "service:build.dockerfile",
	"compose-go-fixtures/loader/testdata/compose-test-extends-with-context-url-imported.yaml": "imported-with-https-url:build.context",
	"compose-go-fixtures/loader/testdata/compose-test-extends-with-context-url.yaml":          "importer-with-https-url:build.context",
	"compose-go-fixtures/loader/testdata/compose-test-with-version.yaml":                      "web:build.context",
	"compose-go-fixtures/loader/testdata/extends/interpolated.yaml":                           "foo:volumes",
	"compose-go-fixtures/loader/testdata/extends/nested.yaml":                                 "with-build:build.dockerfile",
	"compose-go-fixtures/loader/testdata/extends/sibling.yaml":                                "test:build.dockerfile",
	"compose-go-fixtures/loader/testdata/golden/web-stack.golden.yaml":                        "cache:configs db:secrets",
	"compose-go-fixtures/loader/testdata/golden/web-stack.yaml":                               "cache:configs db:secrets",
	"compose-go-fixtures/loader/testdata/include-diamond-base.yaml":                           "diamond:build.dockerfile",
	"compose-go-fixtures/loader/testdata/include-diamond-left.yaml":                           "diamond:build.dockerfile",
	"compose-go-fixtures/loader/testdata/include-diamond-right.yaml":                          "diamond:build.dockerfile",
	"compose-go-fixtures/loader/testdata/include/compose.yaml":                                "included:build.dockerfile",
	"compose-go-fixtures/loader/testdata/include/included.yaml":                               "included:build.dockerfile",
	"compose-spec/spec-md-examples/depends_on-long-syntax.yaml":                               "web:build.dockerfile",
	"compose-spec/spec-md-examples/illustrative-example.yaml":                                 "frontend:secrets",
	"compose-spec/spec-md-examples/networks-advanced-example.yaml":                            "app:build.context proxy:build.context",
	"compose-spec/spec-md-examples/pre_start-hook.yaml":                                       "app:depends_on.db.condition",
}

// blockedServices is "service:field ..." for the blocked services of a
// plan, field being the start of the reason up to its first colon or
// space.
func blockedServices(plan *planner.Plan) string {
	var out []string
	for _, op := range plan.Ops {
		if op.Kind == planner.Blocked && op.Number == 1 {
			field, _, _ := strings.Cut(op.Reason, ":")
			field, _, _ = strings.Cut(field, " ")
			out = append(out, op.Service+":"+field)
		}
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}
