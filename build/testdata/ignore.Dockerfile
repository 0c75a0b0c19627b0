FROM docker-archive:/tmp/builder-lab/busybox.tar
COPY . /ctx
RUN cd /ctx && find . | sort && exit 3
