FROM docker-archive:/tmp/builder-lab/busybox.tar
ENV CODE=3
RUN ["sh", "-c", "echo json form; exit $CODE"]
