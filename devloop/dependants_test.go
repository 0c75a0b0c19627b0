package devloop

import (
	"reflect"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
)

func TestRestartDependants(t *testing.T) {
	on := func(deps map[string]bool) types.DependsOnConfig {
		out := types.DependsOnConfig{}
		for name, restart := range deps {
			out[name] = types.ServiceDependency{Condition: types.ServiceConditionStarted, Restart: restart}
		}
		return out
	}
	services := types.Services{
		"db":    {Name: "db"},
		"api":   {Name: "api", WorkloadSpec: types.WorkloadSpec{DependsOn: on(map[string]bool{"db": true})}},
		"web":   {Name: "web", WorkloadSpec: types.WorkloadSpec{DependsOn: on(map[string]bool{"api": true, "db": true})}},
		"cron":  {Name: "cron", WorkloadSpec: types.WorkloadSpec{DependsOn: on(map[string]bool{"db": false})}},
		"admin": {Name: "admin", WorkloadSpec: types.WorkloadSpec{DependsOn: on(map[string]bool{"cron": true})}},
	}
	got := restartDependants(services)
	want := map[string][]string{"db": {"api", "web"}, "api": {"web"}, "cron": {"admin"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
