package resolve

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestArgv(t *testing.T) {
	imgEP := []string{"/docker-entrypoint.sh"}
	imgCmd := []string{"nginx", "-g", "daemon off;"}
	for _, tc := range []struct {
		name            string
		imgEP, imgCmd   []string
		entrypoint, cmd []string
		want            []string
	}{
		{"image only", imgEP, imgCmd, nil, nil, []string{"/docker-entrypoint.sh", "nginx", "-g", "daemon off;"}},
		{"command replaces image cmd, keeps image entrypoint", imgEP, imgCmd, nil, []string{"sh"}, []string{"/docker-entrypoint.sh", "sh"}},
		{"entrypoint drops image cmd", imgEP, imgCmd, []string{"/bin/sh"}, nil, []string{"/bin/sh"}},
		{"entrypoint and command", imgEP, imgCmd, []string{"/bin/sh", "-c"}, []string{"echo hi"}, []string{"/bin/sh", "-c", "echo hi"}},
		{"empty entrypoint keeps image cmd", imgEP, imgCmd, []string{}, nil, []string{"nginx", "-g", "daemon off;"}},
		{"empty entrypoint with command", imgEP, imgCmd, []string{}, []string{"ls"}, []string{"ls"}},
		{"empty command keeps image cmd", imgEP, imgCmd, nil, []string{}, []string{"/docker-entrypoint.sh", "nginx", "-g", "daemon off;"}},
		{"entrypoint with empty command", imgEP, imgCmd, []string{"/bin/true"}, []string{}, []string{"/bin/true"}},
		{"no image entrypoint", nil, []string{"sh"}, nil, []string{"ls", "-l"}, []string{"ls", "-l"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Argv(tc.imgEP, tc.imgCmd, tc.entrypoint, tc.cmd)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Argv = %q, want %q", got, tc.want)
			}
		})
	}
	if _, err := Argv(nil, nil, []string{}, nil); !errors.Is(err, ErrNoCommand) {
		t.Errorf("Argv of nothing: err = %v, want ErrNoCommand", err)
	}
}

func TestEnv(t *testing.T) {
	got := Env(
		[]string{"PATH=/img/bin", "A=1", "B=2", "C=3"},
		[]string{"B=two", "D=4", "C", "X"},
	)
	want := []string{"PATH=/img/bin", "A=1", "B=two", "D=4"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Env = %q, want %q", got, want)
	}
	got = Env([]string{"A=x=y"}, nil)
	want = []string{"A=x=y", "PATH=" + DefaultPath}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Env = %q, want %q", got, want)
	}
	if v, ok := Lookup(got, "A"); !ok || v != "x=y" {
		t.Errorf("Lookup(A) = %q, %v", v, ok)
	}
}

const passwd = `root:x:0:0:root:/root:/bin/sh
# a comment

daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
app:x:1000:1000::/home/app:/bin/sh
app:x:1001:1001::/dup:/bin/sh
`

const group = `root:x:0:
daemon:x:1:app
wheel:x:10:root,app
nogroup:x:65534:
app:x:1000:
audio:x:29: app , other
`

func TestLookupUser(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want User
		err  string
	}{
		{"", User{Uid: 0, Gid: 0, Groups: []uint32{10}, Home: "/root"}, ""},
		{"root", User{Uid: 0, Gid: 0, Groups: []uint32{10}, Home: "/root"}, ""},
		{"nobody", User{Uid: 65534, Gid: 65534, Home: "/nonexistent"}, ""},
		{"app", User{Uid: 1000, Gid: 1000, Groups: []uint32{1, 10, 29}, Home: "/home/app"}, ""},
		{"1000", User{Uid: 1000, Gid: 1000, Groups: []uint32{1, 10, 29}, Home: "/home/app"}, ""},
		{"1000:1000", User{Uid: 1000, Gid: 1000, Home: "/home/app"}, ""},
		{"app:wheel", User{Uid: 1000, Gid: 10, Home: "/home/app"}, ""},
		{"app:4242", User{Uid: 1000, Gid: 4242, Home: "/home/app"}, ""},
		{"4242", User{Uid: 4242, Gid: 0, Home: "/"}, ""},
		{"4242:4243", User{Uid: 4242, Gid: 4243, Home: "/"}, ""},
		{"4242:daemon", User{Uid: 4242, Gid: 1, Home: "/"}, ""},
		{"ghost", User{}, `user "ghost": no such user`},
		{"app:ghosts", User{}, `group "ghosts": no such group`},
		{"-1", User{}, `user "-1": no such user`},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			got, err := LookupUser(tc.spec, strings.NewReader(passwd), strings.NewReader(group))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("LookupUser(%q) = %+v, want %+v", tc.spec, got, tc.want)
			}
		})
	}
}

func TestLookupUserWithoutFiles(t *testing.T) {
	got, err := LookupUser("1000:1000", nil, nil)
	if err != nil || got.Uid != 1000 || got.Gid != 1000 || got.Home != "/" {
		t.Errorf("LookupUser without files = %+v, %v", got, err)
	}
	if _, err := LookupUser("nobody", nil, nil); err == nil {
		t.Error("a user name resolved without /etc/passwd")
	}
}

func TestLookupGroups(t *testing.T) {
	got, err := LookupGroups([]string{"wheel", "4242", "audio"}, strings.NewReader(group))
	if err != nil || !reflect.DeepEqual(got, []uint32{10, 4242, 29}) {
		t.Errorf("LookupGroups = %v, %v", got, err)
	}
	if _, err := LookupGroups([]string{"nope"}, strings.NewReader(group)); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("unknown group: %v", err)
	}
}
