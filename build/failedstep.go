package build

import (
	"regexp"
	"strconv"
	"strings"
)

// buildah bud (1.28) prints each step as it starts, prefixed with the
// stage's number in the Dockerfile and their count when there are more
// stages than one (stages it skips keep their numbers):
//
//	STEP 3/4: RUN echo about to fail &&     exit 3
//	[2/3] STEP 4/4: RUN echo "failing in a middle stage" &&     false
//
// and ends a failed build with
//
//	Error: building at STEP "RUN sh -c echo json form; exit $CODE": exit status 3
//	Error: building at STEP "COPY missing.txt /missing.txt": checking on sources under "/ctx": copier: stat: "/missing.txt": no such file or directory
//
// (a RUN in JSON form is shown there with its words joined by spaces).
var (
	stepRE   = regexp.MustCompile(`^(?:\[(\d+)/\d+\] )?STEP (\d+)/\d+: (.*)$`)
	failedRE = regexp.MustCompile(`^Error: building at STEP "(.*)": (.*)$`)
	statusRE = regexp.MustCompile(`exit status (\d+)$`)
)

// FailedStep finds, in the output of a failed buildah bud of dockerfile,
// the step that failed: the Dockerfile line it starts on, its
// instruction as written (continued lines joined), and the exit code of
// its command (0 when it failed without running one, as a COPY of a
// missing file does). args are the build's arguments (a FROM may need
// them to parse). ok is false when the output shows no failed step.
func FailedStep(output, dockerfile []byte, args map[string]string) (line int, instruction string, code int, ok bool) {
	lines := strings.Split(strings.ReplaceAll(string(output), "\r\n", "\n"), "\n")
	stageNo, stepNo, failed := 1, 0, ""
	for _, l := range lines {
		if m := stepRE.FindStringSubmatch(l); m != nil {
			stageNo, stepNo = 1, atoi(m[2])
			if m[1] != "" {
				stageNo = atoi(m[1])
			}
		}
		if m := failedRE.FindStringSubmatch(l); m != nil {
			failed = m[2]
			if s := statusRE.FindStringSubmatch(m[2]); s != nil {
				code = atoi(s[1])
			}
		}
	}
	if failed == "" || stepNo == 0 {
		return 0, "", 0, false
	}
	df, err := parseStages(dockerfile, args)
	if err != nil || stageNo > len(df.stages) || stepNo > len(df.stages[stageNo-1].insts) {
		return 0, "", 0, false
	}
	in := df.stages[stageNo-1].insts[stepNo-1]
	return in.line, in.text, code, true
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
